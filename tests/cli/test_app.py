"""The root app is composed of the command groups' modules, and none of them imports it: the
package's leaf modules import without the groups, each group without the root."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from vivit_hpo.cli import app, main

ROOT = Path(__file__).resolve().parents[2]
GROUPS = ("bench", "data", "report", "study", "train", "worker")


def _loaded_after(module: str) -> set[str]:
    """The ``vivit_hpo.cli`` modules a fresh interpreter holds after importing ``module``."""
    code = (
        f"import sys, {module}\n"
        "print(' '.join(m for m in sys.modules if m.startswith('vivit_hpo.cli')))"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert proc.returncode == 0, proc.stderr
    return set(proc.stdout.split())


@pytest.mark.parametrize("module", ["_output", "_common", *GROUPS])
def test_each_module_imports_without_the_root_app_and_the_other_groups(module: str) -> None:
    leaves = {"vivit_hpo.cli", "vivit_hpo.cli._output", "vivit_hpo.cli._common"}
    assert _loaded_after(f"vivit_hpo.cli.{module}") <= {*leaves, f"vivit_hpo.cli.{module}"}


def test_the_root_app_lists_every_command() -> None:
    from vivit_hpo.cli import _app

    assert app is _app.app and main is _app.main
    res = CliRunner(env={"COLUMNS": "200"}).invoke(app, ["--help"])
    assert res.exit_code == 0, res.output
    listing = res.output.split("Commands")[1].splitlines()
    commands = [line.split()[1] for line in listing if line.startswith("│ ")]
    assert commands == [
        *("dashboard", "report", "analyze", "train", "evaluate", "predict", "worker", "run"),
        *("bench", "data", "study"),
    ]
