"""Option aliases and helpers shared by every command group."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

__all__ = ["DataPaths", "Device", "Overrides", "StorageURL", "console", "err_console"]

from rich.console import Console

console = Console()
err_console = Console(stderr=True)

StorageURL = Annotated[
    str | None,
    typer.Option(
        "--storage",
        envvar="VIVIT_HPO_STORAGE",
        help="Study storage URL (postgresql://user:pw@host/db); default: the embedded one "
        "under ./storage.",
        show_default=False,
    ),
]
Device = Annotated[
    str,
    typer.Option("--device", help="auto, cpu, cuda or cuda:i (auto: cuda if available)."),
]
DataPaths = Annotated[
    list[Path],
    typer.Option("--data", help="A session file (*.h5) or a folder of them; repeatable."),
]
Overrides = Annotated[
    list[str] | None,
    typer.Option("--set", help="Override a config key, e.g. --set train.lr=1e-3; repeatable."),
]
