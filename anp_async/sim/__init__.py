"""Deterministic simulation: the real stacks on a virtual clock, replayable from a seed.

``run_seed(seed)`` runs one seeded world (see :mod:`.run`); ``anp sim`` runs many on all
cores (:mod:`.runner`).
"""

from .run import FAULT_PROFILES, SimResult, parse_faults, run_seed
from .scenarios import SCENARIOS

__all__ = ["FAULT_PROFILES", "SCENARIOS", "SimResult", "parse_faults", "run_seed"]
