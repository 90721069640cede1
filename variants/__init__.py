"""The designs side by side, behind one contract (see ``variants.contract``).

``VARIANTS`` is the one registry: experiments, benchmarks and tests import it and nothing else lists
the designs. Its order is the reading order: each design answers the failure of the one before.
"""

from __future__ import annotations

import importlib
from collections import namedtuple
from types import ModuleType

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing
if TYPE_CHECKING:
    from .contract import RunReport

# Kept free of imports a worker does not need: a spawned worker of a design in this package (the supervisor's)
# imports this file first. So the contract's names are handed out on first use (PEP 562), and a Variant is a
# named tuple rather than a dataclass (dataclasses imports inspect: about 12 ms per worker start).
_CONTRACT = frozenset({"KINDS", "Fate", "ItemFate", "RunFailed", "RunReport", "check_arguments"})

__all__ = sorted(_CONTRACT | {"VARIANTS", "Variant"})


def __getattr__(name: str) -> object:
    if name in _CONTRACT:
        return getattr(importlib.import_module(f"{__name__}.contract"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | _CONTRACT)


class Variant(namedtuple("Variant", "name module requires", defaults=(None,))):
    """A design: its name, its module, and the third-party package it wraps (``requires``; experiments skip
    the design when it is missing)."""

    __slots__ = ()

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

    def run(self, job: object, items: object, **kwargs: object) -> RunReport:
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
