"""The same suite on every CPython 3.11+ found on this machine: ``nox`` (or ``nox -s tests-3.12``).

``tests`` installs exactly what the README says (``.[dev]``: every design, Dask included; a design whose package
is missing would be skipped with the reason). ``.ci/run`` is the CI entry point and does the same without nox.
"""

from __future__ import annotations

import nox

nox.options.error_on_missing_interpreters = False
PYTHONS = ["3.11", "3.12", "3.13", "3.14"]


@nox.session(python=PYTHONS)
def tests(session: nox.Session) -> None:
    session.install("-e", ".[dev]")
    session.run("python", "-m", "pytest", *session.posargs)


@nox.session(python="3.11")
def lint(session: nox.Session) -> None:
    session.install("ruff")
    session.run("ruff", "check", ".")
