"""Benchmarks (python -m fakeface.bench): one module per section."""
