"""Plugins shipped with sheaf-core, registered through the same entry point as any other."""
