"""Benchmarks: scripts that measure the product and write JSON and markdown to results/."""
