"""The designs side by side, behind one contract (see ``variants.contract``).

``VARIANTS`` is the one registry: experiments, benchmarks and tests import it and nothing else lists
the designs. Its order is the reading order: each design answers the failure of the one before.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from .contract import KINDS, Fate, ItemFate, RunFailed, RunReport, check_arguments

__all__ = ["KINDS", "VARIANTS", "Fate", "ItemFate", "RunFailed", "RunReport", "Variant", "check_arguments"]


@dataclass(frozen=True)
class Variant:
    name: str
    module: str
    requires: str | None = None  # the third-party package it wraps; experiments skip it when missing

    def load(self) -> ModuleType:
        return importlib.import_module(self.module)

    def available(self) -> tuple[bool, str]:
        if self.requires is None:
            return True, ""
        try:
            importlib.import_module(self.requires)
        except ImportError as e:
            return False, f"{self.name} needs {self.requires!r}, which is not installed ({e})"
        return True, ""

    def run(self, job: Any, items: Any, **kwargs: Any) -> RunReport:
        return self.load().run(job, items, **kwargs)

    @property
    def summary(self) -> str:
        """The first line of the module docstring: the one sentence a reader must remember."""
        return (self.load().__doc__ or "").strip().splitlines()[0]


VARIANTS: dict[str, Variant] = {v.name: v for v in (
    Variant("pool", "variants.pool"),
    Variant("as_completed", "variants.as_completed"),
    Variant("callback_monitor", "variants.callback_monitor"),
    Variant("supervisor", "variants.supervisor"),
    # Peers a user would pick instead, and the scale-out path (optional packages: skipped when missing).
    Variant("pebble_pool", "variants.pebble_pool", requires="pebble"),
    Variant("loky_executor", "variants.loky_executor", requires="loky"),
    Variant("dask_distributed", "variants.dask_distributed", requires="distributed"),
    Variant("mpire_pool", "variants.mpire_pool", requires="mpire"),
    Variant("billiard_pool", "variants.billiard_pool", requires="billiard"),
)}
