"""The sandbox's services: every act and every governed read, one function each.

Each function decides with the policy engine (the decision is in the ledger before it is
used), refuses with the policy's readable reasons when denied, records what was done, and only
then acts. The faces (the CLI, the API, the console, the demo, the federation, the reports)
call these and nothing lower, so every rule is enforced once and the ledger records the same
thing for the same act, whichever face performed it.

Who acts is always given as policy facts (``actor``): the API passes its authenticated
principal's, the CLI those of the principal it names (see :mod:`sandbox.services.principals`).

One module per aggregate: companies and datasets, consents, jobs and approvals, runs, audit
reads and exports, principals and tokens, node keys, policy sets.
"""
