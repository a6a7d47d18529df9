"""The solver registry: ``SOLVERS`` (name -> class), the `register` decorator and `get_solver`.

Its own module so that every solver module registers itself without importing its package.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from .base import Solver

__all__ = ["SOLVERS", "register", "get_solver"]

SOLVERS: dict[str, type["Solver"]] = {}


def register(cls: type["Solver"]) -> type["Solver"]:
    """Class decorator: add a `Solver` subclass to `SOLVERS` under ``cls.name``."""
    if not cls.name:
        raise ValueError("a solver class needs a non-empty name")
    SOLVERS[cls.name] = cls
    return cls


def get_solver(name: str, **options) -> "Solver":
    """Instantiate a registered solver by name; unknown names raise ValueError listing the valid ones."""
    if not isinstance(name, str) or name not in SOLVERS:
        raise ValueError(f"unknown solver {name!r}; valid solvers: {', '.join(sorted(SOLVERS))}")
    return SOLVERS[name](**options)
