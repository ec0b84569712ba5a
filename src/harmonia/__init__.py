"""Harmonia: serve music-generation models behind one job gateway."""

__version__ = "0.1.0"
