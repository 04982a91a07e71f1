"""demandscope's development stack: what `make run`, the tests and the benchmarks start locally.

Not in the wheel (pyproject.toml packages only ``shared`` and ``services``). See
docs/development.md.
"""
