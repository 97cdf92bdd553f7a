"""The regulatory data sandbox: federated training across companies, governed and audited."""

__version__ = "0.1.0"
