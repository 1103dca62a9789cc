"""hotswap: serve ML models from Kafka and swap them in while running."""

__all__ = ["__version__"]

__version__ = "0.1.0"
