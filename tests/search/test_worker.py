"""Real worker processes on a real PostgreSQL: a 3-worker study, a worker killed mid-trial,
NaN / out-of-memory / infeasible trials (outages: test_outages.py)."""

from __future__ import annotations

import multiprocessing as mp
import os
import resource
import signal
import stat
import subprocess
import sys
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
import pytest
import yaml
from optuna.samplers._tpe.sampler import _split_trials
from optuna.trial import TrialState
from search_helpers import (
    claim_gpu_in_child,
    create,
    finish,
    logs_text,
    start_worker,
    wait_for,
    worker_env,
)

from vivit_hpo.errors import ConfigError
from vivit_hpo.search.objective import unreported_epochs
from vivit_hpo.search.space import to_optuna_params
from vivit_hpo.search.spec import load_spec
from vivit_hpo.search.study import (
    enqueue,
    progress,
    study_uid,
    trial_dir,
    trial_rows,
)
from vivit_hpo.search.worker import claim_gpu, run_worker

pytestmark = pytest.mark.postgres


def test_three_workers_finish_the_budget_once_each(
    write_spec: Callable[..., Path], pg_url: str, study_name: str, tmp_path: Path
) -> None:
    # A feasible space with a wide lr range, so that some trials fall behind and get pruned
    # (infeasible trials are covered below).
    spec_path = write_spec(
        budget={"n_trials": 9},
        space={
            "embed_dim": {"choices": [16, 32], "to": "model.core.embed_dim"},
            "heads": {"choices": [2, 4], "to": "model.core.num_heads"},
            "lr": {"low": 1e-4, "high": 2e-2, "log": True, "to": "train.lr"},
        },
        pruner={"name": "median", "options": {"n_startup_trials": 1, "n_warmup_steps": 0}},
    )
    study = create(pg_url, study_name, spec_path)
    logs = [tmp_path / f"w{i}.log" for i in range(3)]
    procs = [start_worker(study_name, pg_url, tmp_path, log) for log in logs]
    codes = finish(procs, 240, logs)
    assert codes == [0, 0, 0], logs_text(logs)

    trials = study.get_trials()
    rows = trial_rows(trials)
    assert len(trials) == 9, logs_text(logs)
    assert sorted(t.number for t in trials) == list(range(9))  # none twice, none lost
    states = Counter(r.state for r in rows)
    assert set(states) <= {"COMPLETE", "PRUNED"}, rows
    assert states["PRUNED"] >= 1, rows  # the pruner stopped something
    assert states["COMPLETE"] >= 1, rows
    for t in trials:
        if t.state == TrialState.COMPLETE:
            assert sorted(t.intermediate_values) == [1, 2, 3]
            assert t.value == pytest.approx(max(t.intermediate_values.values()))
            a = t.user_attrs
            assert a["params_count"] > 0 and a["flops_per_sample"] > 0
            assert a["samples_per_s"] > 0 and a["peak_memory_mb"] > 0
            assert set(a["val_bps_per_session"]) == {"sim00", "sim01"}
            assert a["best_epoch"] in (1, 2, 3) and a["host"] and a["device"] == "cpu"
            assert t.constraints == {"feasible": 0.0}
        else:
            assert t.state == TrialState.PRUNED
            assert t.user_attrs["prune_reason"].startswith("pruned by median after epoch")
            assert t.intermediate_values
    # Three processes shared the study, each with its own random stream: no repeated draws.
    assert len({t.user_attrs["pid"] for t in trials if "pid" in t.user_attrs}) >= 2
    lrs = [t.params["lr"] for t in trials]
    assert len(set(lrs)) == len(lrs), lrs
    # The study is finished: only the 2 best complete trials keep checkpoints.
    spec = load_spec(spec_path)
    folders = [trial_dir(spec, study_name, t.number, uid=study_uid(study)) for t in trials]
    assert all((f / "metrics.json").is_file() for f in folders)
    kept = [f for f in folders if (f / "checkpoints").is_dir()]
    assert 1 <= len(kept) <= 2, kept


def test_a_resumed_trial_reports_the_epochs_only_its_checkpoint_knows() -> None:
    # Killed after epoch 2's checkpoint and before its report: the retry inherited epoch 1.
    history = [{"epoch": 1, "val_bps": 0.10}, {"epoch": 2, "val_bps": 0.08}]
    assert unreported_epochs(history, {1: 0.10}) == [(2, 0.10)]  # the best so far, not 0.08
    assert unreported_epochs(history, {1: 0.10, 2: 0.10}) == []
    assert unreported_epochs(history, {}) == [(1, 0.10), (2, 0.10)]


def test_killed_worker_trial_is_retried_and_resumed(
    write_spec: Callable[..., Path], pg_url: str, study_name: str, tmp_path: Path
) -> None:
    spec_path = write_spec(
        budget={"n_trials": 3},
        epochs=8,  # long enough a trial for the kill to land mid-way
        pruner={"name": "none"},
        space={
            "lr": {"low": 1e-3, "high": 1e-2, "log": True, "to": "train.lr"},
        },
    )
    study = create(pg_url, study_name, spec_path)
    logs = [tmp_path / "a.log", tmp_path / "b.log"]
    a = start_worker(study_name, pg_url, tmp_path, logs[0])

    def a_mid_trial() -> optuna.trial.FrozenTrial | None:
        for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            if t.user_attrs.get("pid") == a.pid and len(t.intermediate_values) >= 1:
                return t
        return None

    victim = wait_for(a_mid_trial, 120, "worker A to finish an epoch")
    a.send_signal(signal.SIGKILL)
    a.wait()
    b = start_worker(study_name, pg_url, tmp_path, logs[1])
    assert finish([b], 240, logs) == [0], logs_text(logs)

    trials = {t.number: t for t in study.get_trials()}
    dead = trials[victim.number]
    assert dead.state == TrialState.FAIL  # failed by the heartbeat check
    retries = [t for t in trials.values() if t.system_attrs.get("failed_trial") == victim.number]
    assert len(retries) == 1, trials
    retry = retries[0]
    assert retry.state == TrialState.COMPLETE
    assert retry.params == dead.params
    assert retry.user_attrs["resumed_from_trial"] == victim.number
    assert retry.user_attrs["resumed_from_epoch"] >= 1  # did not start over at epoch 1
    assert sorted(retry.intermediate_values) == list(range(1, 9))  # inherited + its own
    p = progress(list(trials.values()), 3)
    assert p.done and p.complete == 3 and p.retried == 1 and p.failed == 0


def _limit_data() -> None:
    # A real allocation failure on the CPU: the worker's heap may hold 3 GiB, the OOM trial
    # needs more. RLIMIT_DATA (private writable memory), not RLIMIT_AS: the CUDA build of torch
    # maps more address space than that at import and would fail before the trial.
    resource.setrlimit(resource.RLIMIT_DATA, (3 * 2**30, 3 * 2**30))


def test_nan_oom_and_infeasible_trials_end_with_a_reason(
    write_spec: Callable[..., Path], pg_url: str, study_name: str, tmp_path: Path
) -> None:
    spec_path = write_spec(
        budget={"n_trials": 4},
        epochs=2,
        pruner={"name": "none"},
        feasibility={"max_memory_gb": 1000},  # let the OOM trial past the cheap check
    )
    study = create(pg_url, study_name, spec_path)
    spec = load_spec(spec_path)
    base = {"patch": 2, "stride": 2, "embed_dim": 16, "heads": 2}
    enqueue(study, spec, [f"{k}={v}" for k, v in base.items()] + ["lr=1e-3", "train.lr=1e6"])
    big = ["model.core.embed_dim=2048", "model.core.num_heads=16", "model.core.mlp_ratio=16"]
    enqueue(study, spec, [f"{k}={v}" for k, v in base.items()] + ["lr=1e-3", *big])
    enqueue(study, spec, ["patch=8", "stride=8", "embed_dim=16", "heads=2", "lr=1e-3"])
    enqueue(study, spec, [f"{k}={v}" for k, v in base.items()] + ["lr=3e-3"])
    log = tmp_path / "w.log"
    proc = start_worker(study_name, pg_url, tmp_path, log, preexec_fn=_limit_data)
    assert finish([proc], 240, [log]) == [0], logs_text([log])

    t = {x.number: x for x in study.get_trials()}
    # A diverging loss and running out of memory are the sampled region's: PRUNED with the
    # constraint violated, which TPE sorts into its bad group (it never reads FAIL).
    assert t[0].state == TrialState.PRUNED and t[0].constraints == {"feasible": 1.0}
    assert t[0].user_attrs["fail_reason"].startswith("non-finite loss"), t[0].user_attrs
    assert t[1].state == TrialState.PRUNED and t[1].constraints == {"feasible": 1.0}
    assert t[1].user_attrs["fail_reason"].startswith("out of memory"), t[1].user_attrs
    assert [r.state for r in trial_rows(list(t.values()))[:3]] == ["FAIL", "FAIL", "INFEASIBLE"]
    # TPE sees them, in its bad group, beside the trial that trained (FAIL it never sees).
    below, above = _split_trials(study, [t[0], t[1], t[3]], n_below=1)
    assert [x.number for x in below] == [3] and [x.number for x in above] == [0, 1]
    assert t[2].state == TrialState.PRUNED
    assert "shorter than the tubelet" in t[2].user_attrs["infeasible_reason"]
    assert t[2].constraints == {"feasible": 1.0}
    assert not trial_dir(spec, study_name, 2, uid=study_uid(study)).exists()  # never trained
    assert t[3].state == TrialState.COMPLETE  # the worker carried on
    assert len(t) == 4


def test_a_trial_enqueued_with_a_value_the_space_cannot_take_fails_with_the_reason(
    write_spec: Callable[..., Path], pg_url: str, study_name: str, tmp_path: Path
) -> None:
    # Enqueued through Optuna itself, past `study enqueue`'s checks (another tool, an older
    # version): Optuna would raise mid-suggest and kill the worker with the trial RUNNING.
    study = create(pg_url, study_name, write_spec(budget={"n_trials": 2}))
    study.enqueue_trial({"patch": 2, "lr": "abc"}, skip_if_exists=False)
    study.enqueue_trial({"patch": 4}, skip_if_exists=False)
    log = tmp_path / "w.log"
    assert finish([start_worker(study_name, pg_url, tmp_path, log)], 120, [log]) == [0], logs_text(
        [log]
    )
    t = study.get_trials()
    assert [x.state for x in t] == [TrialState.FAIL, TrialState.FAIL], logs_text([log])
    assert t[0].user_attrs["fail_reason"] == (
        "enqueued with a value the space cannot take: lr='abc': not a number; lr takes a number "
        "in [0.001, 0.01] (log scale)"
    )
    assert t[1].user_attrs["fail_reason"] == (
        "enqueued with a value the space cannot take: patch=4: not one of its choices; patch "
        "takes one of [2, 8]"
    )
    assert [r.reason for r in trial_rows(t)] == [x.user_attrs["fail_reason"] for x in t]


def test_a_grid_study_runs_to_its_last_point(
    write_spec: Callable[..., Path], pg_url: str, study_name: str, tmp_path: Path
) -> None:
    # Optuna's GridSampler calls study.stop() after the last grid point, which raises outside
    # optimize(); the worker's own budget (the grid's size) ends the study instead.
    spec_path = write_spec(
        epochs=1,
        sampler={"name": "grid", "seed": 0},
        pruner={"name": "none"},
        budget={"n_trials": 10},
        space={
            "lr": {"choices": [1e-3, 3e-3], "to": "train.lr"},
            "heads": {"choices": [2, 4], "to": "model.core.num_heads"},
        },
    )
    study = create(pg_url, study_name, spec_path)
    log = tmp_path / "w.log"
    proc = start_worker(study_name, pg_url, tmp_path, log)
    assert finish([proc], 180, [log]) == [0], logs_text([log])
    trials = study.get_trials()
    assert len(trials) == 4 and all(t.state == TrialState.COMPLETE for t in trials), trials
    points = {(t.params["lr"], t.params["heads"]) for t in trials}
    assert points == {(1e-3, 2), (1e-3, 4), (3e-3, 2), (3e-3, 4)}
    assert "Traceback" not in log.read_text()


def test_sighup_checkpoints_the_trial_and_its_retry_resumes(
    write_spec: Callable[..., Path], pg_url: str, study_name: str, tmp_path: Path
) -> None:
    spec_path = write_spec(
        budget={"n_trials": 1},
        epochs=8,  # long enough a trial for the signal to land mid-way
        pruner={"name": "none"},
        space={"lr": {"low": 1e-3, "high": 1e-2, "log": True, "to": "train.lr"}},
    )
    study = create(pg_url, study_name, spec_path)
    log = tmp_path / "w.log"
    proc = start_worker(study_name, pg_url, tmp_path, log)
    wait_for(
        lambda: any(t.intermediate_values for t in study.get_trials(deepcopy=False)),
        120,
        "a first report",
    )
    proc.send_signal(signal.SIGHUP)  # the terminal closed, or a scheduler's hang-up
    assert finish([proc], 60, [log]) == [130], logs_text([log])
    (first, retry) = study.get_trials()
    assert first.state == TrialState.FAIL, logs_text([log])
    assert first.user_attrs["fail_reason"].startswith("interrupted"), first.user_attrs
    assert retry.state == TrialState.WAITING and retry.system_attrs["failed_trial"] == 0
    assert "stop requested (SIGHUP)" in log.read_text()
    spec, uid = load_spec(spec_path), study_uid(study)
    first_dir = trial_dir(spec, study_name, 0, uid=uid)
    assert (first_dir / "checkpoints" / "last.pt").is_file()
    (first_dir / "marker").write_text("moved, not copied")

    summary = run_worker(study_name, pg_url, device="cpu", install_signals=False)
    assert summary.stopped_by == "budget"
    retry = study.get_trials()[1]
    assert retry.state == TrialState.COMPLETE
    # The retry took the folder over (a rename): nothing of it is left under the old number.
    assert not first_dir.exists()
    assert (trial_dir(spec, study_name, 1, uid=uid) / "marker").is_file()
    assert retry.user_attrs["resumed_from_trial"] == 0
    assert retry.user_attrs["resumed_from_epoch"] >= 1  # from its checkpoint, not epoch 1
    assert sorted(retry.intermediate_values) == list(range(1, 9))


@pytest.mark.parametrize("explicit", ["cuda:1", "cuda"])
def test_an_explicit_gpu_takes_the_same_lock_as_cuda_any(explicit: str, tmp_path: Path) -> None:
    # No GPU here: the locks are real flocks held by real processes, as the workers take them.
    # Children forked from a server that imported the worker module once: fast, and not pytest.
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(["vivit_hpo.search.worker", "search_helpers"])
    out = ctx.Queue()
    index = explicit.partition(":")[2] or "0"
    other = f"cuda:{1 - int(index)}"

    def claim(device: str, keep: bool = False) -> tuple[str, Any]:
        p = ctx.Process(target=claim_gpu_in_child, args=(device, str(tmp_path), out, keep))
        p.start()
        got = out.get(timeout=30)
        if not keep:
            p.join(30)
        return got, p

    first, holder = claim(explicit, keep=True)
    assert first == f"cuda:{index}"
    again, _ = claim(explicit)  # another worker, the same GPU by hand: refused
    assert again.startswith("error: ") and f"held by worker pid {holder.pid}" in again, again
    anyone, second = claim("cuda:any", keep=True)  # cuda:any skips the held GPU
    assert anyone == other
    full, _ = claim("cuda:any")
    assert "all 2 GPUs are held" in full, full
    assert "only 2 CUDA device(s)" in claim("cuda:2")[0]
    holder.kill()  # however a worker dies, its GPU is free again
    holder.join(30)
    assert claim(explicit)[0] == f"cuda:{index}"
    second.kill()
    second.join(30)


def _claim_in_a_process(tmp_path: Path, **env: str) -> str:
    """``claim_gpu('cuda:any')`` of 2 GPUs, with its default lock folder, in a new process
    whose environment has ``env`` (and neither XDG_RUNTIME_DIR nor VIVIT_HPO_GPU_LOCK_DIR
    unless given): the device it took."""
    full = worker_env("", tmp_path)
    for key in ("XDG_RUNTIME_DIR", "VIVIT_HPO_GPU_LOCK_DIR", "TMPDIR"):
        full.pop(key, None)
    code = "from vivit_hpo.search.worker import claim_gpu; print(claim_gpu('cuda:any', 2))"
    proc = subprocess.run(
        [sys.executable, "-c", code], env={**full, **env}, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


def test_gpu_locks_live_in_a_folder_of_the_users_own(tmp_path: Path) -> None:
    # Not one folder for every user: another user's lock files would stop this user's workers.
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    assert _claim_in_a_process(tmp_path, TMPDIR=str(tmp)) == "cuda:0"
    base = tmp / f"vivit-hpo-{os.getuid()}"
    lock = base / "gpu-locks" / "gpu-0.lock"
    assert lock.is_file() and stat.S_IMODE(lock.stat().st_mode) == 0o600
    for folder in (base, base / "gpu-locks"):
        st = os.lstat(folder)
        assert st.st_uid == os.getuid() and stat.S_IMODE(st.st_mode) == 0o700
    run = tmp_path / "run"  # a login's runtime folder, when it has one
    run.mkdir(mode=0o700)
    assert _claim_in_a_process(tmp_path, TMPDIR=str(tmp), XDG_RUNTIME_DIR=str(run)) == "cuda:0"
    assert (run / "vivit-hpo" / "gpu-locks" / "gpu-0.lock").is_file()
    if os.geteuid() == 0:  # another user's runtime folder (`su` keeps it): the tmp one instead
        theirs = tmp_path / "theirs"
        theirs.mkdir(mode=0o700)
        os.chown(theirs, 65534, 65534)
        got = _claim_in_a_process(tmp_path, TMPDIR=str(tmp), XDG_RUNTIME_DIR=str(theirs))
        assert got == "cuda:0" and not list(theirs.iterdir())
    shared = tmp_path / "locks"  # containers share one by hand
    got = _claim_in_a_process(tmp_path, TMPDIR=str(tmp), VIVIT_HPO_GPU_LOCK_DIR=str(shared))
    assert got == "cuda:0" and (shared / "gpu-0.lock").is_file()


def test_a_symlink_planted_at_a_lock_file_is_not_followed(tmp_path: Path) -> None:
    locks = tmp_path / "locks"
    locks.mkdir()
    victim = tmp_path / "victim.txt"
    victim.write_text("someone's work\n")
    (locks / "gpu-0.lock").symlink_to(victim)
    with pytest.raises(ConfigError) as got:
        claim_gpu("cuda:0", 2, locks)
    msg = str(got.value)
    assert f"cannot open its lock {locks / 'gpu-0.lock'} (Too many levels" in msg, msg
    assert "\n" not in msg
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(["vivit_hpo.search.worker", "search_helpers"])
    out = ctx.Queue()
    # cuda:any skips the GPU whose lock file it cannot open, and takes the next one.
    p = ctx.Process(target=claim_gpu_in_child, args=("cuda:any", str(locks), out, False))
    p.start()
    assert out.get(timeout=30) == "cuda:1"
    p.join(30)
    (locks / "gpu-1.lock").unlink()
    (locks / "gpu-1.lock").symlink_to(victim)
    with pytest.raises(ConfigError, match=r"cuda:any: no GPU is free \(0 held by other workers; "):
        claim_gpu("cuda:any", 2, locks)
    assert victim.read_text() == "someone's work\n"  # neither truncated nor written


def _planted_link(base: Path) -> str:
    (base.parent / "elsewhere").mkdir()
    base.symlink_to(base.parent / "elsewhere")
    return "is a symlink"


def _open_to_all(base: Path) -> str:
    base.mkdir()
    base.chmod(0o777)
    return "can be written by others (mode 777)"


def _another_users(base: Path) -> str:
    if os.geteuid() != 0:
        pytest.skip("only root can give a folder to another user")
    base.mkdir(mode=0o700)
    os.chown(base, 65534, 65534)
    return f"belongs to uid 65534, not to you (uid {os.getuid()})"


def _a_file(base: Path) -> str:
    base.write_text("")
    return "is not a folder"


@pytest.mark.parametrize(
    "plant",
    [_planted_link, _open_to_all, _another_users, _a_file],
    ids=["symlink", "open-to-all", "another-users", "file"],
)
def test_an_unsafe_lock_folder_is_one_line_with_the_fix(
    plant: Callable[[Path], str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = tmp_path / "run"
    run.mkdir(mode=0o700)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(run))
    monkeypatch.delenv("VIVIT_HPO_GPU_LOCK_DIR", raising=False)
    why = plant(run / "vivit-hpo")  # what another user could have left where the folder goes
    with pytest.raises(ConfigError) as got:
        claim_gpu("cuda:any", 2)
    assert str(got.value) == (
        f"GPU lock folder {run / 'vivit-hpo'}: {why}; remove it, or set VIVIT_HPO_GPU_LOCK_DIR "
        "to a folder of your own"
    )
    assert not list(tmp_path.rglob("gpu-*.lock"))


def test_a_lock_folder_that_cannot_be_made_is_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "file").write_text("")
    monkeypatch.setenv("VIVIT_HPO_GPU_LOCK_DIR", str(tmp_path / "file" / "locks"))
    with pytest.raises(ConfigError) as got:
        claim_gpu("cuda:0", 2)
    assert str(got.value) == (
        f"GPU lock folder {tmp_path / 'file' / 'locks'}: cannot be created (Not a directory); "
        "pass a folder you can write in VIVIT_HPO_GPU_LOCK_DIR"
    )


def test_checkpoints_behind_the_best_go_while_the_study_runs(
    write_spec: Callable[..., Path], pg_url: str, study_name: str
) -> None:
    spec_path = write_spec(
        budget={"n_trials": 10},
        epochs=1,
        pruner={"name": "none"},
        space={"lr": {"low": 1e-3, "high": 1e-2, "log": True, "to": "train.lr"}},
    )
    tree = yaml.safe_load(spec_path.read_text())
    tree["artifacts"]["keep_best"] = 1
    spec_path.write_text(yaml.safe_dump(tree))
    study = create(pg_url, study_name, spec_path)
    # 3 of the study's 10 trials: it is far from finished, so no end-of-study pruning ran.
    summary = run_worker(study_name, pg_url, 3, "cpu", install_signals=False)
    assert summary.stopped_by == "n_trials" and summary.states["COMPLETE"] == 3
    spec, uid = load_spec(spec_path), study_uid(study)
    trials = study.get_trials()
    best = max(trials, key=lambda t: t.value or -1e9)
    for t in trials:
        folder = trial_dir(spec, study_name, t.number, uid=uid)
        assert (folder / "metrics.json").is_file()
        assert (folder / "checkpoints").is_dir() == (t.number == best.number), t.number


def test_the_baseline_is_never_pruned(
    write_spec: Callable[..., Path], pg_url: str, study_name: str
) -> None:
    # Two good trials set the median; then the same bad config twice, once as the baseline.
    spec_path = write_spec(
        budget={"n_trials": 4},
        epochs=3,
        pruner={"name": "median", "options": {"n_startup_trials": 1, "n_warmup_steps": 0}},
    )
    study = create(pg_url, study_name, spec_path)
    spec = load_spec(spec_path)
    good = ["patch=2", "stride=2", "embed_dim=16", "heads=2", "lr=3e-3"]
    for _ in range(2):
        enqueue(study, spec, good)
    assert run_worker(study_name, pg_url, 2, "cpu", install_signals=False).trials == 2
    bad = [*good[:-1], "lr=1e-3", "train.lr=1e-7"]
    enqueue(study, spec, bad)
    assert run_worker(study_name, pg_url, 1, "cpu", install_signals=False).trials == 1
    control = study.get_trials()[2]
    assert control.state == TrialState.PRUNED, control.user_attrs  # the pruner does prune it
    study.enqueue_trial(
        control.params,
        user_attrs={"baseline": True, "extra_overrides": {"train.lr": 1e-7}},
        skip_if_exists=False,
    )
    assert run_worker(study_name, pg_url, 1, "cpu", install_signals=False).trials == 1
    baseline = study.get_trials()[3]
    assert baseline.state == TrialState.COMPLETE, baseline.user_attrs
    assert sorted(baseline.intermediate_values) == [1, 2, 3]


def test_the_baseline_sets_the_bar_at_each_rung(
    write_spec: Callable[..., Path], pg_url: str, study_name: str
) -> None:
    # Successive halving keeps the first trial to reach a rung. Asked too, the baseline is that
    # first trial, and a worse one after it is pruned at the rung instead of promoted.
    spec_path = write_spec(
        budget={"n_trials": 2},
        epochs=2,
        pruner={
            "name": "successive_halving",
            "options": {"min_resource": 1, "reduction_factor": 3},
        },
    )
    study = create(pg_url, study_name, spec_path)
    spec = load_spec(spec_path)
    good = ["patch=2", "stride=2", "embed_dim=16", "heads=2", "lr=3e-3"]
    values = {"patch": 2, "stride": 2, "embed_dim": 16, "heads": 2, "lr": 3e-3}
    study.enqueue_trial(
        to_optuna_params(spec.space, values), user_attrs={"baseline": True}, skip_if_exists=False
    )
    enqueue(study, spec, [*good[:-1], "lr=1e-3", "train.lr=1e-7"])
    assert run_worker(study_name, pg_url, 2, "cpu", install_signals=False).trials == 2
    baseline, worse = study.get_trials()
    assert baseline.state == TrialState.COMPLETE and "completed_rung_0" in baseline.system_attrs
    assert worse.state == TrialState.PRUNED, worse.user_attrs


def test_every_report_is_the_best_so_far_and_the_last_is_the_value(
    write_spec: Callable[..., Path],
    pg_url: str,
    study_name: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The validation BPS of epochs 1..3 is scripted: it goes down in the last epoch.
    import dataclasses

    import vivit_hpo.training.loop as loop

    scripted = iter([0.1, 0.3, 0.2])
    real = loop.evaluate

    def evaluate(*args: Any, **kwargs: Any) -> Any:
        bps = next(scripted)
        return {n: dataclasses.replace(s, bps=bps) for n, s in real(*args, **kwargs).items()}

    monkeypatch.setattr(loop, "evaluate", evaluate)
    spec_path = write_spec(budget={"n_trials": 1}, epochs=3, pruner={"name": "none"})
    study = create(pg_url, study_name, spec_path)
    enqueue(study, load_spec(spec_path), ["patch=2", "stride=2", "embed_dim=16", "heads=2"])
    assert run_worker(study_name, pg_url, 1, "cpu", install_signals=False).trials == 1
    (t,) = study.get_trials()
    assert t.state == TrialState.COMPLETE, t.user_attrs
    assert t.intermediate_values == {1: 0.1, 2: 0.3, 3: 0.3}  # monotone
    assert t.intermediate_values[3] == t.value == 0.3
    # Each epoch's own value stays in the run folder.
    from vivit_hpo.search.record import read_epochs

    assert [r.val_bps for r in read_epochs(Path(t.user_attrs["trial_dir"]))] == [0.1, 0.3, 0.2]
