"""What crosses between the sandbox and a company's node: the job spec an engineer files,
the code bundle filed with it, the tasks and replies of a run, the receipts a node signs."""
