"""Benchmarks: ``python -m benchmarks`` (see the README's Performance section)."""
