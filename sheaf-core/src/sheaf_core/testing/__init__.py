"""Test helpers for backend authors. `BackendConformance` is the conformance suite."""

from sheaf_core.testing.conformance import BackendConformance

__all__ = ["BackendConformance"]
