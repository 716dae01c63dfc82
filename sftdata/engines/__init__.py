"""Engines: how the pure ops of sftdata/ops run over a dataset (docs/engines.md).

An engine reads an input as units (sftdata/datasets.py), maps a function over them, and for
the global steps of dedup shuffles by key. Commands ask :func:`get_engine` for one and call the
same methods whichever it is; the ops never know which engine runs them.

  local  in this process (the default); a plain file or stdin is one unit, as before
  ray    Ray Data tasks on a local Ray (started on first use) or the cluster at --ray-address
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import Any, Protocol

from ..datasets import Unit

ENGINES = ("local", "ray")
ENV = "SFTDATA_ENGINE"


class Engine(Protocol):
    name: str

    def plan(self, path: str) -> list[Unit]:
        """The input as units of work, in input order."""

    def map(self, units: list[Unit], fn: Callable[..., Any], *args: Any) -> Iterator[Any]:
        """``fn(frame, unit, *args)`` for every unit, results in unit order."""


def get_engine(name: str | None = None, address: str | None = None) -> Engine:
    """The engine called ``name`` (default: $SFTDATA_ENGINE, else local)."""
    name = name or os.environ.get(ENV) or "local"
    if name == "local":
        from .local import LocalEngine

        return LocalEngine()
    if name == "ray":
        from .ray_engine import RayEngine

        return RayEngine(address)
    from ..errors import UsageProblem

    raise UsageProblem(f"{ENV}={name!r} is not an engine; use one of {', '.join(ENGINES)}")
