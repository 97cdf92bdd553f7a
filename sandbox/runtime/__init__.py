"""The composition of the sandbox: the only code that imports both the coordinator and the
company's client (the simulation launch, the API's job runs, the federation, the demo)."""
