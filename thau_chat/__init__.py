"""THAU: a local tool-calling chat runtime for small models."""

__version__ = "0.1.0"
