"""Test helpers for plugin authors: a conformance suite per thing a plugin registers —
`BackendConformance` (a backend), `ContractConformance` (a model type), and
`CombinerConformance` (a pipeline combiner)."""

from sheaf_core.testing.conformance import BackendConformance
from sheaf_core.testing.extensions import CombinerConformance, ContractConformance

__all__ = ["BackendConformance", "CombinerConformance", "ContractConformance"]
