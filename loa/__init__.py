"""Loa: shared parts used by every package (settings, database, protocol, time, text)."""

__version__ = "0.1.0"
