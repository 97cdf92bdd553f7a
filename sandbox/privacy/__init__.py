"""Privacy that is enforced: record-level DP accounting, budgets per company per purpose."""
