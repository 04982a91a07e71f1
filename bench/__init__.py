"""Benchmarks: each measures demandscope against a baseline taken in the same run."""
