"""Benchmarks against a real local broker: hotswap beside baselines measured in the same run."""
