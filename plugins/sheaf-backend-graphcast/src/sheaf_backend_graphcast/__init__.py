"""Sheaf backend `graphcast`: GraphCast through PhysicsNeMo's GraphCastNet."""

__version__ = "0.1.0"
