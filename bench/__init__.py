"""Benchmarks against a real local broker: hotswap beside baselines measured in the same run.

Ratios to baselines measured on the same broker, data and model in the same run
mean more than absolute numbers on a shared, noisy machine; that is why every
contender runs here, one after the other, instead of comparing with old figures.
"""
