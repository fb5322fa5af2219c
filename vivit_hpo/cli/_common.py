"""Option aliases and helpers shared by every command group."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from vivit_hpo import settings
from vivit_hpo.errors import OutputPathError

__all__ = [
    "DataPaths",
    "Device",
    "Force",
    "Overrides",
    "StorageURL",
    "check_file_output",
    "check_not_an_input",
    "console",
    "err_console",
]

console = Console()
err_console = Console(stderr=True)

StorageURL = Annotated[
    str | None,
    typer.Option(
        "--storage",
        envvar=settings.STORAGE.name,
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
Force = Annotated[
    bool, typer.Option("--force", help="Replace the --out file if it exists (refused otherwise).")
]


def _same_path(a: Path, b: Path) -> bool:
    """Whether ``a`` and ``b`` are one file or folder: the same inode (a link, a bind mount),
    or the same path once resolved when either does not exist yet."""
    try:
        return os.path.samefile(a, b)
    except OSError:
        return a.resolve() == b.resolve()


def check_not_an_input(
    out: Path, inputs: Iterable[tuple[str, Path | None]], *, flag: str = "--out", fix: str = ""
) -> None:
    """Refuse to write ``out`` when it is one of the command's ``inputs`` (what, path).

    Raises:
        OutputPathError: one line naming the input, before anything is read or written.
    """
    for what, path in inputs:
        if path is not None and _same_path(out, path):
            raise OutputPathError(
                f"{flag} {out}: is the {what} {path} that this command reads (writing it would "
                f"destroy the input); {fix or f'pass another {flag}'}"
            )


def check_file_output(out: Path, *, replace: bool, flag: str = "--out") -> None:
    """Refuse to write the file ``out`` where a folder is, or over an existing file unless
    ``replace`` (``--force``, or a command whose output is meant to be rewritten).

    Raises:
        OutputPathError: one line naming ``out`` and the fix.
    """
    if out.is_dir():
        raise OutputPathError(f"{flag} {out}: is a folder; pass the path of a file to write")
    if not replace and (out.exists() or out.is_symlink()):
        raise OutputPathError(
            f"{flag} {out}: already exists; pass --force to replace it, or another {flag}"
        )
