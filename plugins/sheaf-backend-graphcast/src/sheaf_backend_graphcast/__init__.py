"""Sheaf backend `graphcast`: GraphCast through PhysicsNeMo's GraphCastNet."""
