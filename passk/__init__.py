"""The `passk` command: reproduce the figures, explore regimes, run benchmarks."""

__version__ = "0.1.0"
