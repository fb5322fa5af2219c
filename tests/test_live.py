"""The live view of a run (``vivit_hpo._live``): what the coordinator reports, drawn as
``vivit-hpo run`` draws it, on an 80-column console."""

from __future__ import annotations

import io

import pytest
from rich.console import Console
from rich.live import Live

from vivit_hpo._live import LiveView
from vivit_hpo.infra import INFRA_EXIT_CODE
from vivit_hpo.search.coordinator import RunMessage, RunSnapshot, WorkerStatus
from vivit_hpo.search.study import progress

WORKERS = (
    WorkerStatus(0, "cpu", pid=4242, running=True, given_up=False, last_code=None, restarts=0),
    WorkerStatus(
        1, "cpu", pid=None, running=False, given_up=True, last_code=INFRA_EXIT_CODE, restarts=2
    ),
    WorkerStatus(2, "cuda:0", pid=7, running=False, given_up=True, last_code=1, restarts=3),
    WorkerStatus(3, "cuda:1", pid=8, running=False, given_up=False, last_code=0, restarts=0),
)


def _snapshot(note: str, *, final: bool = False) -> RunSnapshot:
    return RunSnapshot("s", progress([], 3), WORKERS, 60.0, note, final=final)


def _console() -> tuple[Console, io.StringIO]:
    out = io.StringIO()
    return Console(file=out, width=80), out


def test_a_worker_states_how_it_stands() -> None:
    assert [w.state for w in WORKERS] == [
        "running",
        f"stopped: infrastructure error (exit {INFRA_EXIT_CODE})",
        "gave up (exit 1)",
        "exited (0)",
    ]


def test_the_live_table_gives_way_to_the_lines_and_the_final_table_stays() -> None:
    console, out = _console()
    with LiveView(console) as view:
        view(RunMessage("study 's': 4 worker(s)"))
        view(_snapshot("drawn live"))
        view(_snapshot("drawn live again"))
        view(RunMessage("stopping the workers"))
        view(_snapshot("the last note", final=True))
        view(RunMessage(f"error: {'a long reason ' * 8}", one_line=True))
    text = out.getvalue()
    assert "drawn live" not in text  # transient: cleared once it stops
    lines = [line.rstrip() for line in text.splitlines()]
    assert lines[:3] == ["study 's': 4 worker(s)", "stopping the workers", "study s"]
    assert lines[-2:] == ["the last note", f"error: {'a long reason ' * 8}".rstrip()]
    assert "0/3" in text and "4242" in text and "gave up (exit 1)" in text
    assert max(len(line) for line in lines[:-1]) <= 80


def test_leaving_the_view_stops_its_live_table() -> None:
    console, _ = _console()
    with pytest.raises(RuntimeError), LiveView(console) as view:
        view(_snapshot("drawn live"))
        raise RuntimeError("the run failed")
    with Live(console=console):  # rich allows one live display at a time
        pass
