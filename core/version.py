"""The version of aiport (one place; the distribution reads it from here)."""

__version__ = "0.1.0"
