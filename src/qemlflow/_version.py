"""The QeMLflow version."""

__version__ = "0.1.0"
