"""The ``vivit-hpo`` command line.

Each command group lives in its own module and stays thin: it parses options and calls the
library. :mod:`vivit_hpo.cli._app` composes the groups into the Typer ``app``, which
``from vivit_hpo.cli import app`` (and ``main``, the console script) imports on first use, so
that the package's leaf module :mod:`~vivit_hpo.cli._common` imports without every command
group. The tables are built by :mod:`vivit_hpo._output` (``cli._output`` re-exports it).
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from vivit_hpo.cli._app import app, main

__all__ = ["app", "main"]


def __getattr__(name: str) -> Any:
    if name not in __all__:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module("vivit_hpo.cli._app"), name)
