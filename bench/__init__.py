"""Benchmarks of prism-backends; run them with ``uv run python -m bench.<name>``."""
