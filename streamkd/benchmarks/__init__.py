"""Benchmarks the project ships: scripts that print ratios measured in one run."""
