"""Infrastructure errors on real workers and a real PostgreSQL: a data file gone from this node,
a disk that fills (a real tmpfs, or RLIMIT_FSIZE), and ``vivit-hpo run`` with such a worker. The
trial is re-enqueued (no budget spent), the worker stops after K in a row with exit 75 and one
line, ``run`` does not restart it, and a worker on a healthy node finishes the study."""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import optuna
import pytest
import torch
from optuna.trial import TrialState
from search_helpers import create, finish, start_worker, wait_for, worker_env

from vivit_hpo.errors import DataError, DataUnavailableError
from vivit_hpo.infra import INFRA_EXIT_CODE, check_data_here, infrastructure_error
from vivit_hpo.search.spec import load_spec
from vivit_hpo.search.storage import open_storage
from vivit_hpo.search.study import (
    enqueue,
    load_study,
    logs_dir,
    progress,
    study_uid,
    trial_dir,
)
from vivit_hpo.search.worker import run_worker
from vivit_hpo.testing.faults import file_size_limit
from vivit_hpo.training.checkpoint import save_checkpoint

pytestmark = pytest.mark.postgres

ONE_LR = {"lr": {"low": 1e-3, "high": 1e-2, "log": True, "to": "train.lr"}}
K = 2  # --max-infra-errors of the tests' workers


def _own_data(sim_dir: Path, tmp_path: Path) -> list[Path]:
    """A copy of the suite's session files that this test may remove (data.paths lists them)."""
    out = tmp_path / "data"
    out.mkdir()
    files = []
    for f in sorted(sim_dir.glob("*.h5")):
        shutil.copy(f, out / f.name)
        files.append(out / f.name)
    return files


def _assert_requeued_not_spent(study: optuna.Study, budget: int, first: int = 0) -> None:
    """Trials ``first`` .. ``first + K - 1`` failed on the node and were re-enqueued in turn, the
    last retry WAITING with none of their reasons, nothing failed for good."""
    trials = study.get_trials()[first:]
    assert [t.state for t in trials] == [TrialState.FAIL] * K + [TrialState.WAITING], trials
    for t in trials[:K]:
        assert t.user_attrs["fail_reason"].startswith("infrastructure error (re-enqueued)")
    retry = trials[-1]
    assert retry.system_attrs["failed_trial"] == first
    assert retry.system_attrs["retry_history"] == list(range(first, first + K))
    assert "fail_reason" not in retry.user_attrs, retry.user_attrs  # not inherited
    p = progress(study.get_trials(), budget)
    assert p.failed == 0 and p.retried == K and p.waiting == 1, p


def _stop_line(log: Path, count: int = K) -> str:
    """The worker's one error line (and no traceback)."""
    text = log.read_text()
    assert "Traceback" not in text, text
    (line,) = [x for x in text.splitlines() if x.startswith("error: ")]
    what = f"({count} trials in a row re-enqueued, none spent)" if count else "before taking"
    assert line.startswith(f"error: infrastructure error, worker stopped {what}"), line
    return line


def _data_spec(write_spec: Callable[..., Path], files: list[Path], **changes: Any) -> Path:
    tree: dict[str, Any] = {
        "data": {"paths": [str(f) for f in files]},
        "budget": {"n_trials": 2},
        "epochs": 1,
        "pruner": {"name": "none"},
        "space": ONE_LR,
    }
    return write_spec(**{**tree, **changes})


def test_data_missing_at_start_stops_the_worker_before_any_trial(
    write_spec: Callable[..., Path],
    pg_url: str,
    study_name: str,
    tmp_path: Path,
    sim_dir: Path,
) -> None:
    files = _own_data(sim_dir, tmp_path)
    study = create(pg_url, study_name, _data_spec(write_spec, files))
    away = tmp_path / "away.h5"
    files[0].rename(away)  # the node lacks the file (a mount missing) after the study was made
    log = tmp_path / "w.log"
    proc = start_worker(study_name, pg_url, tmp_path, log)
    assert finish([proc], 120, [log]) == [INFRA_EXIT_CODE], log.read_text()
    line = _stop_line(log, 0)
    assert f"data file {files[0]} missing on this node" in line, line
    assert "restore it or mount the data on this node" in line, line
    assert study.get_trials() == []  # nothing claimed, nothing spent


def test_data_gone_mid_study_requeues_trials_and_a_later_worker_finishes(
    write_spec: Callable[..., Path],
    pg_url: str,
    study_name: str,
    tmp_path: Path,
    sim_dir: Path,
) -> None:
    files = _own_data(sim_dir, tmp_path)
    spec_path = _data_spec(write_spec, files, epochs=6)  # time to remove the file mid-trial
    study = create(pg_url, study_name, spec_path)
    spec = load_spec(spec_path)
    enqueue(study, spec, ["lr=3e-3"])
    enqueue(study, spec, ["lr=3e-3", "data.num_lags=8"])  # another data config: loads again
    log = tmp_path / "w.log"
    proc = start_worker(study_name, pg_url, tmp_path, log, "--max-infra-errors", str(K))
    wait_for(
        lambda: any(t.intermediate_values for t in study.get_trials(deepcopy=False)),
        120,
        "trial 0's first epoch (its data loaded)",
    )
    away = tmp_path / "away.h5"
    files[1].rename(away)  # the mount dropped while the worker runs
    assert finish([proc], 120, [log]) == [INFRA_EXIT_CODE], log.read_text()
    line = _stop_line(log)
    assert f"data file {files[1]} missing on this node" in line, line
    assert study.get_trials()[0].state == TrialState.COMPLETE  # its data was in memory
    _assert_requeued_not_spent(study, 2, first=1)

    away.rename(files[1])  # the data is back (or another node has it): the study finishes
    summary = run_worker(study_name, pg_url, device="cpu", install_signals=False)
    assert summary.stopped_by == "budget", summary
    trials = study.get_trials()
    p = progress(trials, 2)
    assert p.done and p.complete == 2 and p.failed == 0, p
    assert trials[-1].state == TrialState.COMPLETE  # the retry, finished
    assert trials[-1].user_attrs["run_config"]["data"]["num_lags"] == 8


@contextlib.contextmanager
def _tmpfs(path: Path, size: str, *options: str) -> Iterator[None]:
    """A real small file system at ``path`` (we run as root in a container), or skip."""
    path.mkdir(parents=True, exist_ok=True)
    opts = ",".join([f"size={size}", *options])
    got = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(path)], capture_output=True, text=True
    )
    if got.returncode != 0:
        pytest.skip(f"mount -t tmpfs not permitted here: {got.stderr.strip()}")
    try:
        yield
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def _fill(folder: Path, leave: int) -> None:
    """Fill the file system of ``folder`` but ``leave`` bytes, as another job's files would."""
    st = os.statvfs(folder)
    free = st.f_bavail * st.f_frsize
    with open(folder / "filler", "wb") as f:
        f.write(b"\0" * max(0, free - leave))


@pytest.mark.parametrize("how", ["tmpfs", "fsize"])
def test_a_full_disk_failing_the_checkpoint_requeues_the_trial(
    how: str, write_spec: Callable[..., Path], pg_url: str, study_name: str, tmp_path: Path
) -> None:
    artifacts = tmp_path / "artifacts"
    spec_path = write_spec(budget={"n_trials": 1}, epochs=1, pruner={"name": "none"}, space=ONE_LR)
    with contextlib.ExitStack() as stack:
        preexec = None
        if how == "tmpfs":
            stack.enter_context(_tmpfs(artifacts, "4m"))
        else:
            # No file past 16 KiB (EFBIG), as on a full disk; its small log stays below it.
            preexec = file_size_limit(16 * 2**10)
        study = create(pg_url, study_name, spec_path)
        if how == "tmpfs":
            _fill(artifacts, leave=16 * 2**10)  # room for the run's small files, not a checkpoint
        log = tmp_path / "w.log"
        args = ("--max-infra-errors", str(K))
        proc = start_worker(study_name, pg_url, tmp_path, log, *args, preexec_fn=preexec)
        assert finish([proc], 120, [log]) == [INFRA_EXIT_CODE], log.read_text()
        line = _stop_line(log)
        want = "disk full" if how == "tmpfs" else "file too large"
        assert want in line and "point artifacts.dir" in line, line
        _assert_requeued_not_spent(study, 1)
        # It got as far as the checkpoint: the run's small files are there, no checkpoint.
        folder = trial_dir(load_spec(spec_path), study_name, K - 1, uid=study_uid(study))
        assert (folder / "config.yaml").is_file(), list(folder.rglob("*"))
        assert not list(folder.rglob("*.pt")), list(folder.rglob("*"))
        if how == "tmpfs":
            (artifacts / "filler").unlink()  # space freed: the retry runs here now
    if how == "tmpfs":
        return  # the tmpfs (the trials' folders with it) is gone; test (a) covers the resume
    summary = run_worker(study_name, pg_url, device="cpu", install_signals=False)
    assert summary.stopped_by == "budget" and summary.states == {"COMPLETE": 1}, summary


def test_run_does_not_restart_a_worker_stopped_by_the_node(
    write_spec: Callable[..., Path],
    pg_url: str,
    study_name: str,
    tmp_path: Path,
    sim_dir: Path,
) -> None:
    files = _own_data(sim_dir, tmp_path)
    spec = _data_spec(write_spec, files)
    create(pg_url, study_name, spec)
    files[1].unlink()
    env = worker_env(pg_url, tmp_path)
    env["COLUMNS"] = "400"  # the table's lines unwrapped
    args = ["run", study_name, "--workers", "1", "--storage", pg_url]
    run = subprocess.run(
        [sys.executable, "-m", "vivit_hpo", *args],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    out = run.stdout + run.stderr
    assert run.returncode == INFRA_EXIT_CODE, out
    assert "stopped: infrastructure error (exit 75)" in out, out
    assert "worker 0 not restarted: infrastructure error, worker stopped" in out, out
    assert f"data file {files[1]} missing on this node" in out, out
    assert "error: no worker left before study" in out and "resumes its trials" in out, out
    study = load_study(open_storage(pg_url), study_name)
    logs = logs_dir(load_spec(spec, check=False), study_name, study_uid(study))
    started = (logs / "worker-0.log").read_text().count("starting worker")
    assert started == 1, (logs / "worker-0.log").read_text()  # started once, not restarted
    p = progress(study.get_trials(), 2)
    assert p.failed == 0 and p.logical == 0 and not p.done, p


# -- which errors are the node's: real exceptions where this machine can make them -----------


def test_a_full_disk_under_torch_save_is_the_node(tmp_path: Path) -> None:
    disk = tmp_path / "disk"
    big = {"w": torch.zeros(64 * 2**10)}  # 256 KiB: more than the disk holds
    with _tmpfs(disk, "64k"):
        with pytest.raises(RuntimeError) as ours:  # the project's writer: the OS error chained
            save_checkpoint(disk / "last.pt", big)
        with pytest.raises(RuntimeError) as plain:  # torch.save to a path: torch's text only
            torch.save(big, disk / "plain.pt")
    assert (infrastructure_error(ours.value) or "").startswith("disk full"), ours.value
    assert (infrastructure_error(plain.value) or "").startswith("writing a checkpoint failed")


def test_a_read_only_place_and_missing_data_are_the_node(tmp_path: Path) -> None:
    ro = tmp_path / "ro"
    with _tmpfs(ro, "64k", "ro"), pytest.raises(OSError) as refused:
        (ro / "metrics.json").write_text("{}")
    assert refused.value.errno == errno.EROFS
    assert (infrastructure_error(refused.value) or "").startswith("no permission on"), refused
    for code in (errno.EACCES, errno.EPERM):  # root passes every permission check here
        assert infrastructure_error(PermissionError(code, os.strerror(code), "/x")) is not None
    assert infrastructure_error(OSError(errno.EDQUOT, "Disk quota exceeded", "/x")) is not None

    present = tmp_path / "s.h5"
    present.write_bytes(b"\x89HDF\r\n\x1a\n")
    check_data_here([present])  # there and readable: fine
    gone = tmp_path / f"{uuid.uuid4().hex}.h5"
    loop = tmp_path / "loop.h5"
    loop.symlink_to(loop)  # a real OS error on open (ELOOP): unreadable, not missing
    empty = tmp_path / "empty"
    empty.mkdir()
    for path, what in ((gone, "missing"), (loop, "unreadable"), (empty, "no *.h5")):
        with pytest.raises(DataUnavailableError) as e:
            check_data_here([present, path])
        assert what in str(e.value) and str(path) in str(e.value), e.value
        assert infrastructure_error(e.value) == str(e.value)


@pytest.mark.parametrize(
    "text",
    [
        "CUDA error: an illegal memory access was encountered",
        "CUDA error: uncorrectable ECC error encountered",
        "CUDA error: unspecified launch failure",
        "CUDA error: CUBLAS_STATUS_EXECUTION_FAILED when calling `cublasSgemm( handle )`",
        "cuDNN error: CUDNN_STATUS_EXECUTION_FAILED",
    ],
)
def test_gpu_errors_are_the_node(text: str) -> None:
    # No GPU here: the texts torch raises (as torch.AcceleratorError, a RuntimeError).
    assert (infrastructure_error(torch.AcceleratorError(text)) or "").startswith("GPU error")


@pytest.mark.parametrize(
    "exc",
    [
        torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"),
        RuntimeError("CUDA error: out of memory"),
        RuntimeError("CUDA error: CUBLAS_STATUS_ALLOC_FAILED when calling `cublasCreate(handle)`"),
        RuntimeError("CUDA error: device-side assert triggered"),
        RuntimeError("cuDNN error: CUDNN_STATUS_NOT_SUPPORTED. This error may appear if ..."),
        RuntimeError("mat1 and mat2 shapes cannot be multiplied (16x24 and 16x16)"),
        ValueError("lr must be positive"),
        DataError("s.h5: responses: has NaN; write finite counts"),
        OSError(errno.EINVAL, "Invalid argument"),
    ],
)
def test_the_configs_own_errors_are_not_the_node(exc: Exception) -> None:
    assert infrastructure_error(exc) is None
