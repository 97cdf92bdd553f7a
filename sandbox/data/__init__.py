"""Real data sources, the bring-your-own-data loader and per-company vault preparation."""
