"""The checks of the faults beyond kills, restarts and outages, each on what the study, its
folders and the logs hold once every process is stopped:

- ``resumed``: every retry that trained resumed from its predecessor's last reported epoch (no
  checkpoint of a resumable trial was deleted), but the retry of a torn ``last.pt``, checked
  by ``torn``;
- ``workers``: no worker of ``run`` stopped as the node's fault (exit 75: a stall or an
  infrastructure error): waiting for the database is no hang;
- ``give-up``: every outage past the give-up time was held until a worker said it gave up a
  storage call and waits, and every trial mid-way through it was handed back (not failed) or
  finished, its logical trial not lost;
- ``hang``: each hung worker exited 75, its trial ended by the watchdog (``stalled``) and
  re-enqueued, its logical trial not lost;
- ``bad-node``: each bad node's worker exited 75, every trial it ran handed back as an
  infrastructure error, none lost;
- ``torn``: the first retry that trained after a torn ``last.pt`` resumed from the newest
  ``epochNNN.pt`` (an older epoch);
- ``twin``: the study and its twin (same name, another storage, one artifacts root) have
  different uids, and neither's workers wrote into the other's trial folders or logs; each
  keeps its best checkpoints; the twin's study is done, none of its trials lost.
"""

from __future__ import annotations

import contextlib
import re
from collections import defaultdict
from collections.abc import Iterable, Sequence
from pathlib import Path

from optuna.trial import FrozenTrial, TrialState

from vivit_hpo.bench.chaos.driver import Driver
from vivit_hpo.bench.chaos.result import Check, Node, Outage, Torn
from vivit_hpo.bench.chaos.sandbox import artifacts_env
from vivit_hpo.search.progress import searched_complete
from vivit_hpo.search.record import (
    FAIL_REASON,
    RETRY_CAUSES,
    RETRY_HISTORY,
    EpochRecord,
    read_epochs,
    retried_numbers,
    worker_of,
)
from vivit_hpo.search.spec import StudySpec, study_n_trials
from vivit_hpo.search.storage import open_storage
from vivit_hpo.search.study import (
    load_study,
    logs_dir,
    progress,
    study_uid,
    trials_dir,
)

__all__ = ["fault_checks"]

STALLED_LINE = "the running trial stalled"  # the watchdog fired (search.watchdog)
STOPPED_LINE = "error: infrastructure error, worker stopped"  # a worker's exit 75
_PID = re.compile(r" worker\[(\d+)\] ")


def _records(folder: Path) -> list[EpochRecord]:
    """The epoch records of every trial folder in ``folder`` (``trials-<uid>``)."""
    return [r for f in sorted(folder.glob("trial-*")) for r in read_epochs(f)]


def _chain_end(n: int, retried: dict[int, int]) -> int:
    while n in retried:
        n = retried[n]
    return n


def _lost(n: int, trials: dict[int, FrozenTrial], retried: dict[int, int]) -> bool:
    """Whether the logical trial of ``n`` ended FAIL (its last retry failed for good)."""
    end = trials.get(_chain_end(n, retried))
    return end is None or end.state == TrialState.FAIL


def _handed_back_by(worker: str, trials: Sequence[FrozenTrial]) -> list[int]:
    """The trials that ``worker`` failed and re-enqueued (their retries record it)."""
    out = []
    for t in trials:
        history = t.system_attrs.get(RETRY_HISTORY) or []
        causes = t.system_attrs.get(RETRY_CAUSES) or []
        if history and causes and causes[-1].get("worker") == worker:
            out.append(int(history[-1]))
    return sorted(out)


def _lines(paths: Iterable[Path], text: str) -> list[str]:
    out = []
    for p in paths:
        with contextlib.suppress(OSError):
            out += [line for line in p.read_text(errors="replace").splitlines() if text in line]
    return out


def _first_trained(records: dict[int, list[EpochRecord]], n: int) -> int | None:
    own = records.get(n)
    return min(r.epoch for r in own) if own else None


def _after_tear(
    torn: int, retried: dict[int, int], records: dict[int, list[EpochRecord]]
) -> int | None:
    """The first retry after trial ``torn`` that trained an epoch."""
    n = torn
    while n in retried:
        n = retried[n]
        if _first_trained(records, n) is not None:
            return n
    return None


def _resumed(
    trials: list[FrozenTrial], records: dict[int, list[EpochRecord]], exempt: set[int]
) -> tuple[Check, int]:
    by_number = {t.number: t for t in trials}
    bad = []
    checked = 0
    for t in trials:
        history = t.system_attrs.get(RETRY_HISTORY) or []
        first = _first_trained(records, t.number)
        if not history or first is None or t.number in exempt:
            continue
        pred = by_number.get(int(history[-1]))
        if pred is None:
            continue
        checked += 1
        reported = max(pred.intermediate_values, default=0)
        if first <= reported:
            bad.append(
                f"#{t.number} trained epoch {first} again, #{pred.number} reported {reported}"
            )
    detail = "; ".join(bad[:5]) or (
        f"{checked} retries resumed from their predecessor's last reported epoch"
    )
    return Check("resumed", not bad, detail), len(bad)


def _node_check(
    node: Node, trials: list[FrozenTrial], retried: dict[int, int], reason: str
) -> list[str]:
    """What is wrong with ``node``'s run: its exit, its trials' ends."""
    by_number = {t.number: t for t in trials}
    bad = []
    if node.exit_code != 75:
        state = "still running at the end" if node.exit_code is None else f"exit {node.exit_code}"
        bad.append(f"{node.kind} worker {node.worker}: {state}, not 75 (see {node.log})")
    handed = _handed_back_by(node.worker, trials)
    # Handed back for the node's fault at least once; an outage meanwhile may hand one back
    # for the database's (a lost heartbeat) as well.
    reasons = [str(by_number[n].user_attrs.get(FAIL_REASON, "")) for n in handed]
    if not any(r.startswith("infrastructure error (re-enqueued)") and reason in r for r in reasons):
        bad.append(
            f"{node.kind} worker {node.worker} handed no trial back for {reason!r} "
            f"({'; '.join(reasons) or 'none handed back'}; see {node.log})"
        )
    bad += [f"#{n}'s logical trial ended FAIL" for n in handed if _lost(n, by_number, retried)]
    pid = node.worker.rpartition(":")[2]
    for t in trials:
        if (
            t.state == TrialState.FAIL
            and t.number not in retried
            and str(t.user_attrs.get("pid")) == pid
        ):
            bad.append(f"#{t.number} failed for good on the {node.kind} worker")
    return bad


def _twin_check(d: Driver, trials: list[FrozenTrial]) -> Check:
    assert d.twin_url is not None and d.twin_spec is not None and d.storage is not None
    storage = open_storage(d.twin_url)
    try:
        twin = load_study(storage, d.name)
        twin_trials = twin.get_trials()
        twin_uid = study_uid(twin)
    except Exception as e:
        storage.engine.dispose()
        return Check("twin", False, f"the twin study cannot be read: {e}")
    storage.engine.dispose()
    uid = d.uid()
    bad = []
    if not uid or not twin_uid or uid == twin_uid:
        bad.append(f"uids {uid!r} and {twin_uid!r}: not two of their own")
    studies: list[tuple[str, StudySpec, str | None, list[FrozenTrial]]] = [
        ("study", d.spec, uid, trials),
        ("twin", d.twin_spec, twin_uid, twin_trials),
    ]
    with artifacts_env(d.artifacts):
        folders = {label: trials_dir(spec, d.name, u) for label, spec, u, _ in studies}
        logs = {label: logs_dir(spec, d.name, u) for label, spec, u, _ in studies}
    pids = {
        label: {str(t.user_attrs.get("pid")) for t in ts if t.user_attrs.get("pid")}
        for label, _, _, ts in studies
    }
    for label, spec, _, ts in studies:
        other = "twin" if label == "study" else "study"
        by_number = {t.number: t for t in ts}
        for r in _records(folders[label]):
            ran = by_number.get(r.trial)
            if ran is None or worker_of(ran) != r.worker:
                bad.append(f"{label}'s folder: epoch {r.epoch} of #{r.trial} by {r.worker}")
        strangers = {
            m.group(1)
            for line in _lines(logs[label].glob("worker-*.log"), " worker[")
            if (m := _PID.search(line))
        } & (pids[other] - pids[label])
        if strangers:
            bad.append(f"{label}'s logs hold lines of the {other}'s workers {sorted(strangers)}")
        complete = sorted(searched_complete(ts), key=lambda t: t.value or 0.0, reverse=True)
        for t in complete[: spec.artifacts.keep_best]:
            if not list((folders[label] / f"trial-{t.number}" / "checkpoints").glob("best-*")):
                bad.append(f"{label}'s best #{t.number} lost its checkpoints")
    p = progress(twin_trials, study_n_trials(d.twin_spec))
    lost = [t.number for t in twin_trials if t.state == TrialState.FAIL] if p.failed else []
    if not p.done or p.failed:
        bad.append(f"the twin's study: done {p.done}, failed {p.failed} {lost}")
    detail = "; ".join(bad[:6]) or (
        f"uids {uid} and {twin_uid}; the twin's {p.finished} trials done; no file or log line "
        "of one in the other's folders; best checkpoints kept"
    )
    return Check("twin", not bad, detail)


def _give_up_check(
    outages: list[Outage], by_number: dict[int, FrozenTrial], retried: dict[int, int]
) -> Check:
    bad = []
    for o in outages:
        if not o.gave_up:
            bad.append(f"no worker gave up in the {o.seconds:.0f} s outage")
        for n in o.mid_way:
            t = by_number.get(n)
            handed = t is not None and t.state == TrialState.FAIL and n in retried
            if t is None or not (handed or t.state == TrialState.COMPLETE):
                bad.append(f"#{n} mid-way: {t.state.name if t else 'gone'}, not handed back")
            elif _lost(n, by_number, retried):
                bad.append(f"#{n}'s logical trial ended FAIL")
    mid = sum(len(o.mid_way) for o in outages)
    detail = "; ".join(bad[:5]) or (
        f"{len(outages)} outage(s) past the give-up time "
        f"({', '.join(f'{o.seconds:.0f} s' for o in outages)}): {mid} trial(s) mid-way "
        "handed back and resumed"
    )
    return Check("give-up", not bad, detail)


def _torn_check(
    torn: list[Torn], after: dict[int, int | None], records: dict[int, list[EpochRecord]]
) -> Check:
    bad, good = [], []
    for tear in torn:
        n = after[tear.trial]
        want = (tear.fallback_epoch or 0) + 1
        first = None if n is None else _first_trained(records, n)
        if first != want:
            retry = "(none trained)" if n is None else f"#{n}"
            bad.append(
                f"#{tear.trial} (last.pt epoch {tear.last_epoch} torn): its retry {retry} "
                f"began at epoch {first}, not {want}"
            )
        else:
            good.append(
                f"#{tear.trial}'s retry #{n} resumed from epoch {want - 1} (its torn last.pt "
                f"held epoch {tear.last_epoch})"
            )
    return Check("torn", not bad, "; ".join(bad or good))


def fault_checks(d: Driver, trials: list[FrozenTrial]) -> tuple[list[Check], int]:
    """The checks above (those of faults the run played). Returns them and how many retries
    did not resume from their predecessor's checkpoint."""
    retried = retried_numbers(trials)
    by_number = {t.number: t for t in trials}
    records: dict[int, list[EpochRecord]] = defaultdict(list)
    uid = d.uid()
    if trials and uid is not None:
        with artifacts_env(d.artifacts):
            folder = trials_dir(d.spec, d.name, uid)
        for r in _records(folder):
            records[r.trial].append(r)
    after = {t.trial: _after_tear(t.trial, retried, records) for t in d.torn}
    resumed, scratch = _resumed(trials, records, {n for n in after.values() if n is not None})
    checks = [resumed]

    node_logs = {Path(n.log) for n in d.nodes()}
    run_logs = [p for p in d.worker_logs() if p not in node_logs]
    stopped = _lines(run_logs, STALLED_LINE) + _lines(run_logs, STOPPED_LINE)
    detail = "; ".join(line[:200] for line in stopped[:3])
    checks.append(
        Check(
            "workers",
            not stopped,
            detail or f"no worker of run stopped as the node's fault ({len(run_logs)} logs)",
        )
    )
    give_ups = [o for o in d.outages if o.give_up]
    if give_ups:
        checks.append(_give_up_check(give_ups, by_number, retried))
    for kind, reason in (("hang", "stalled: no training step"), ("bad-node", "file too large")):
        nodes = [n for n in d.nodes() if n.kind == kind]
        if nodes:
            bad = [b for n in nodes for b in _node_check(n, trials, retried, reason)]
            handed = sum(len(_handed_back_by(n.worker, trials)) for n in nodes)
            detail = "; ".join(bad[:5]) or (
                f"{len(nodes)} {kind} worker(s) exited 75; {handed} trial(s) handed back "
                f"({reason}) and resumed"
            )
            checks.append(Check(kind, not bad, detail))
    if d.torn:
        checks.append(_torn_check(d.torn, after, records))
    if d.twin is not None:
        checks.append(_twin_check(d, trials))
    return checks, scratch
