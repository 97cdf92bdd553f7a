"""A company's node: its home folder, its hash-chained local log."""
