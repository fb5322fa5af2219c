"""examples/slurm/vivit-hpo-worker.sbatch: valid bash, an array job that asks for the stop
signal before its time limit, passes it on to its workers and requeues itself."""

from __future__ import annotations

import re
import subprocess

from search_helpers import ROOT

SBATCH = ROOT / "examples" / "slurm" / "vivit-hpo-worker.sbatch"


def test_sbatch_script_is_an_array_job_that_requeues_on_a_stop_signal() -> None:
    got = subprocess.run(["bash", "-n", str(SBATCH)], capture_output=True, text=True)
    assert got.returncode == 0, got.stderr
    text = SBATCH.read_text()
    directives = dict(
        re.match(r"#SBATCH --([\w-]+)=?(\S*)", line).groups()  # type: ignore[union-attr]
        for line in text.splitlines()
        if line.startswith("#SBATCH --")
    )
    assert directives["signal"] == "B:TERM@120"  # to the batch shell, 120 s before the limit
    assert "requeue" in directives and "array" in directives
    assert re.search(r"trap forward TERM", text)  # the shell passes the signal on
    assert 'vivit-hpo worker "$STUDY" --device "${WORKER_DEVICE:-cuda:$i}" &' in text
    assert 'scontrol requeue "$SLURM_JOB_ID"' in text
