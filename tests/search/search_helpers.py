"""Helpers of the study-service tests: tiny specs, worker processes, polling."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]

# A tiny ViViT on the suite's 16x16 simulated sessions: an epoch is a fraction of a second.
TINY_BASE: dict[str, Any] = {
    "model": {
        "core": {
            "embed_dim": 16,
            "num_heads": 2,
            "num_spatial_blocks": 1,
            "num_temporal_blocks": 1,
            "kernel_size": [2, 4, 4],
            "stride": [2, 4, 4],
            "num_registers": 1,
        },
        "modulator": {"hidden_dim": 4},
    },
    "data": {"num_lags": 6},
    "train": {
        "batch_size": 16,
        "steps_per_epoch": 4,
        "max_val_batches": 2,
        "warmup_epochs": 0,
        "early_stopping_patience": None,
        "lr": 3e-3,
    },
}

# Cube tubelets on 6 lags: patch 8 is longer than the lags (infeasible), and embed_dim 24 with
# 4 heads gives 6-dim heads that 2D RoPE cannot split (infeasible).
TINY_SPACE: dict[str, Any] = {
    "patch": {"choices": [2, 8], "to": "model.core.kernel_size"},
    "stride": {"choices": [2, 8], "le": "patch", "to": "model.core.stride"},
    "embed_dim": {"choices": [16, 24], "to": "model.core.embed_dim"},
    "heads": {"choices": [2, 4], "to": "model.core.num_heads"},
    "lr": {"low": 1e-3, "high": 1e-2, "log": True, "to": "train.lr"},
}


def tiny_spec_tree(sim_dir: Path, artifacts: Path, **changes: Any) -> dict[str, Any]:
    tree: dict[str, Any] = {
        "description": "test",
        "data": {"paths": [str(sim_dir)]},
        "base": {"config": TINY_BASE},
        "space": TINY_SPACE,
        "epochs": 3,
        "baseline": False,  # the tests that want the base config first say so
        "sampler": {"name": "tpe", "seed": 0, "options": {"n_startup_trials": 3}},
        "pruner": {"name": "median", "options": {"n_startup_trials": 2, "n_warmup_steps": 0}},
        "budget": {"n_trials": 6},
        "heartbeat": {"interval_s": 1, "grace_s": 4, "max_retry": 2},
        "artifacts": {"dir": str(artifacts), "keep_best": 2},
    }
    tree.update(changes)
    return tree


def worker_env(storage_url: str, home: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["VIVIT_HPO_STORAGE"] = storage_url
    env["VIVIT_HPO_HOME"] = str(home)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env["OMP_NUM_THREADS"] = "1"
    return env


def start_worker(
    name: str,
    storage_url: str,
    home: Path,
    log: Path,
    *extra: str,
    preexec_fn: Callable[[], None] | None = None,
) -> subprocess.Popen[bytes]:
    """``python -m vivit_hpo worker NAME --device cpu`` as a real process, output in ``log``."""
    f = open(log, "ab")  # noqa: SIM115 - closed with the process by the OS
    return subprocess.Popen(
        [sys.executable, "-m", "vivit_hpo", "worker", name, "--device", "cpu", *extra],
        stdout=f,
        stderr=subprocess.STDOUT,
        env=worker_env(storage_url, home),
        cwd=home,
        preexec_fn=preexec_fn,
    )


def wait_for(cond: Callable[[], Any], timeout: float, what: str, every: float = 0.2) -> Any:
    """Poll ``cond`` until it returns something truthy; fail the test after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = cond()
        if got:
            return got
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def finish(procs: list[subprocess.Popen[bytes]], timeout: float, logs: list[Path]) -> list[int]:
    """Wait for the workers; on a timeout kill them and fail with their logs."""
    codes = []
    deadline = time.monotonic() + timeout
    for p in procs:
        try:
            codes.append(p.wait(timeout=max(1.0, deadline - time.monotonic())))
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            text = "\n".join(log.read_text()[-3000:] for log in logs if log.exists())
            raise AssertionError(f"workers did not finish in {timeout} s:\n{text}") from None
    return codes


def claim_gpu_in_child(device: str, lock_dir: str, out: Any, hold: bool) -> None:
    """In a child process: ``claim_gpu(device)`` of 2 GPUs; put the device (or ``error: ...``)
    on the queue ``out``; with ``hold``, keep the lock until killed."""
    from vivit_hpo.errors import ConfigError
    from vivit_hpo.search.worker import claim_gpu

    try:
        out.put(claim_gpu(device, 2, Path(lock_dir)))
    except ConfigError as e:
        out.put(f"error: {e}")
    if hold:
        time.sleep(120)


def hold_claim_lock_in_child(url: str, name: str, idle_s: float, conn: Any) -> None:
    """In a child process: take the claim lock of study ``name`` (idle timeout ``idle_s``), send
    ``"held"`` on the pipe ``conn``, hold it until ``"release"`` arrives, then send how the lock's
    transaction ended: ``"released"``, or ``"lost transient=<is_transient>: <error>"``."""
    from vivit_hpo.search.storage import (
        ClaimTimeouts,
        claim_lock,
        describe,
        is_transient,
        open_storage,
    )

    storage = open_storage(url)
    try:
        with claim_lock(storage, name, timeouts=ClaimTimeouts(idle_s=idle_s, wait_s=60.0)):
            conn.send("held")
            conn.poll(600)
    except Exception as e:
        conn.send(f"lost transient={is_transient(e)}: {describe(e)}")
    else:
        conn.send("released")
    finally:
        storage.engine.dispose()
