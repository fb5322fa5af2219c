"""The worker's stop signals in a real process: a trial given up (a real SIGUSR1) while the
main thread imports a module is raised once the import is done, never inside it, which would
leave the module broken for every later trial of the process."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from search_helpers import ROOT

# The package's import gives the running trial up half-way (as the heartbeat thread does when
# an outage outlasts the grace period), then goes on; it had imported a submodule already.
_PKG = {
    "__init__.py": (
        "import builtins, time\n"
        "import pkg.sub\n"
        "builtins.STOP.abandon('lost mid-import')\n"
        "end = time.monotonic() + 1.0\n"
        "while time.monotonic() < end:  # bytecode, for the signal handler to run in\n"
        "    pass\n"
        "value = pkg.sub.X\n"
    ),
    "sub.py": "X = 7\n",
}

_SCRIPT = """
import builtins, sys, time
sys.path.insert(0, sys.argv[1])
from vivit_hpo.search.signals import StopControl, TrialLost
stop = builtins.STOP = StopControl()
stop.install()
try:
    with stop.interruptible():
        import pkg
        time.sleep(30)  # the trial's training goes on: the raise lands here
    print("not raised")
except TrialLost as e:
    print("raised:", e, "; imported:", "pkg" in sys.modules)
stop.lost = None
import pkg  # the next trial imports it again
print("value", pkg.value)
"""


def test_a_trial_given_up_mid_import_is_raised_after_the_import(tmp_path: Path) -> None:
    (tmp_path / "pkg").mkdir()
    for name, text in _PKG.items():
        (tmp_path / "pkg" / name).write_text(text)
    got = subprocess.run(
        [sys.executable, "-c", _SCRIPT, str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert got.returncode == 0, got.stderr
    assert got.stdout.splitlines() == [
        "raised: lost mid-import ; imported: True",
        "value 7",
    ], got.stdout + got.stderr
