"""Sheaf backend for the Chronos family. Importing this package imports no torch."""

__version__ = "0.1.0"
