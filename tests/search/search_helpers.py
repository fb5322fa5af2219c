"""Helpers of the study-service tests: tiny specs, worker processes, polling."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna

from vivit_hpo.search.spec import load_spec
from vivit_hpo.search.storage import open_storage
from vivit_hpo.search.study import create_study, load_study
from vivit_hpo.testing import tiny_base, tiny_spec

ROOT = Path(__file__).resolve().parents[2]

# A tiny ViViT on the suite's 16x16 simulated sessions: an epoch is a fraction of a second.
TINY_BASE: dict[str, Any] = tiny_base()


def tiny_spec_tree(sim_dir: Path, artifacts: Path, **changes: Any) -> dict[str, Any]:
    """The suite's tiny spec (:func:`~vivit_hpo.testing.tiny_spec`) on the session files in
    ``sim_dir``, its artifacts in ``artifacts``; ``changes`` replace top-level keys."""
    return tiny_spec(
        **{
            "description": "test",
            "data": {"paths": [str(sim_dir)]},
            "artifacts": {"dir": str(artifacts), "keep_best": 2},
            **changes,
        }
    )


def create(url: str, name: str, spec_path: Path) -> optuna.Study:
    """Create study ``name`` from the spec file on ``url``, and load it."""
    storage = open_storage(url)
    create_study(storage, name, load_spec(spec_path))
    return load_study(storage, name)


def logs_text(paths: list[Path], tail: int = 6000) -> str:
    """The last ``tail`` characters of each worker log that exists, for assertion messages."""
    return "\n".join(p.read_text()[-tail:] for p in paths if p.exists())


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
    env: dict[str, str] | None = None,
) -> subprocess.Popen[bytes]:
    """``python -m vivit_hpo worker NAME --device cpu`` as a real process, output in ``log``;
    ``env`` replaces its environment (default :func:`worker_env`)."""
    f = open(log, "ab")  # noqa: SIM115 - closed with the process by the OS
    return subprocess.Popen(
        [sys.executable, "-m", "vivit_hpo", "worker", name, "--device", "cpu", *extra],
        stdout=f,
        stderr=subprocess.STDOUT,
        env=worker_env(storage_url, home) if env is None else env,
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


class CuttableProxy:
    """A TCP proxy on 127.0.0.1 to ``port`` that a test can cut, as a network partition cuts
    one node off the database while the server and every other node carry on.

    :meth:`cut` closes every connection through it and refuses new ones (connection refused);
    :meth:`restore` accepts them again, on the same port.
    """

    def __init__(self, port: int) -> None:
        self.target = port
        self.port = 0
        self._conns: list[socket.socket] = []
        self._lock = threading.Lock()
        self._listener: socket.socket | None = None
        self.restore()

    def restore(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self.port = listener.getsockname()[1]
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return  # cut
            upstream = socket.create_connection(("127.0.0.1", self.target))
            with self._lock:
                self._conns += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

    def cut(self) -> None:
        assert self._listener is not None
        # shutdown() wakes the thread blocked in accept(); close() alone leaves it listening.
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)
        self._listener.close()
        self._listener = None
        with self._lock:
            conns, self._conns = self._conns, []
        for s in conns:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()

    def url(self, database: str) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"


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


def running_with_reports(study: optuna.Study, n: int = 2, trials: int = 1) -> bool:
    """At least ``trials`` trials are running and have reported ``n`` epochs each."""
    running = [
        t
        for t in study.get_trials(deepcopy=False)
        if t.state == optuna.trial.TrialState.RUNNING and len(t.intermediate_values) >= n
    ]
    return len(running) >= trials
