"""The processes of a chaos run, read from ``/proc``: ``run``'s workers, live or not."""

from __future__ import annotations

from pathlib import Path

__all__ = ["cmdline", "is_worker", "proc_stat", "workers_of"]


def proc_stat(pid: int) -> tuple[str, int] | None:
    """(state, parent pid) of a process, from ``/proc/<pid>/stat``; None when it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text.rpartition(")")[2].split()
    return fields[0], int(fields[1])


def cmdline(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return []


def is_worker(pid: int) -> bool:
    stat = proc_stat(pid)
    cmd = cmdline(pid)
    return stat is not None and stat[0] != "Z" and "vivit_hpo" in cmd and "worker" in cmd


def workers_of(pid: int) -> list[int]:
    """The live worker processes whose parent is ``pid`` (zombies left out)."""
    out = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        stat = proc_stat(int(entry.name))
        if stat is not None and stat[1] == pid and is_worker(int(entry.name)):
            out.append(int(entry.name))
    return sorted(out)
