"""``vivit-hpo bench models``: the searched ViViT against a lab's yardsticks, same data, same time.

On the spec's data (simulated once into ``OUT/data-<hash of the recipe>``, or the spec's
``data.paths``) and the same cores:

1. the spec's ViViT search, run by the coordinator users run (:func:`run_study`) with N
   workers for M minutes of wall time: ``budget.timeout_minutes`` alone stops the workers at the
   limit and fails their running trials (to resume later), so the workers also get
   ``--finish-by``: a running trial whose next epoch would end after the deadline completes
   with its best epoch, test split scored. The yardsticks are not part of this search;
2. each yardstick of the spec's ``baselines`` trained alone for the same M minutes with all N
   workers' torch threads: its schedule sized to the time (calibrated seconds per step), it
   stops when its next epoch would end after the deadline, and its best epoch is scored on
   the test split.

One table (rows: best ViViT, each yardstick; columns: test BPS, fraction of the oracle where
known, seconds, parameters) and ``OUT/bench_models.json``.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import os
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from rich import box
from rich.console import Console

from vivit_hpo._io import atomic_write_text
from vivit_hpo._output import Column, FitTable, count, fixed, grouped, percent, signed
from vivit_hpo.errors import SpecError
from vivit_hpo.search.spec import DataSpec, StudySpec, spec_to_text, yardstick_trees

__all__ = ["SCHEMA", "ModelRow", "models_table", "run_models_bench", "train_for"]

SCHEMA = "vivit-hpo-bench-models/1"
# Left to score the test split once the last epoch ends: a share of the minutes, at most 30 s.
_RESERVE_FRACTION, _RESERVE_MAX_S = 0.1, 30.0


@dataclass(frozen=True)
class ModelRow:
    """One row of the table: a model and what it reached in the time."""

    model: str  # "best ViViT" or the yardstick's name
    test_bps: float | None
    fraction_of_oracle: float | None
    seconds: float  # wall time it used
    params: int | None
    epochs: int
    detail: str  # the trial, or why there is no result


def _threads(workers: int) -> int:
    """The torch threads of N CPU workers together, as the coordinator gives them."""
    per_worker = int(os.environ.get("OMP_NUM_THREADS") or 0) or max(
        1, (os.cpu_count() or 1) // workers
    )
    return max(1, per_worker * workers)


def train_for(
    tree: dict[str, Any],
    data_paths: Sequence[Path],
    *,
    seconds: float,
    epochs: int,
    device: str,
    run_dir: Path,
) -> dict[str, Any]:
    """Train the run config ``tree`` on ``data_paths`` for ``seconds`` of wall time (loading and
    calibration included) and score its best epoch on the test split.

    The schedule is sized to the time left after calibration (``epochs`` epochs of the steps
    that fit in 80% of it; validation takes the rest); it stops early when its next epoch would
    end after the deadline.

    Returns:
        ``test_bps``, ``epochs``, ``best_epoch``, ``params``, ``seconds``.
    """
    from vivit_hpo.bench.modes import calibrate
    from vivit_hpo.config import parse_run_config
    from vivit_hpo.data import load_sessions
    from vivit_hpo.metrics import mean_over_sessions
    from vivit_hpo.models import count_parameters
    from vivit_hpo.training import Trainer, evaluate, load_run

    start = time.monotonic()
    deadline = start + seconds
    cfg = parse_run_config(tree, "yardstick")
    data = load_sessions(list(data_paths), cfg.data)
    one = cfg.model_copy(
        update={"train": cfg.train.model_copy(update={"epochs": 1, "steps_per_epoch": 1})}
    )
    per_step = calibrate([one], data, device)[0]  # the fastest of 5 rounds: a passing spike
    # on a shared machine does not shrink the schedule
    left = max(0.0, deadline - time.monotonic())
    steps = max(epochs, int(0.8 * left / per_step))
    train = cfg.train.model_copy(
        update={
            "epochs": epochs,
            "steps_per_epoch": max(1, steps // epochs),
            "early_stopping_patience": None,
        }
    )
    cfg = cfg.model_copy(update={"train": train})
    trainer = Trainer(cfg, data, device=device, run_dir=run_dir)
    done = 0
    began = time.monotonic()
    for report in trainer.epochs():
        done = report.epoch
        now = time.monotonic()
        epoch_s, began = now - began, now  # training and validation
        if now + epoch_s > deadline:
            break
    test = None
    if data.num_samples("test") and trainer.best_epoch is not None:
        _, model, _ = load_run(run_dir, device)
        scores = evaluate(model, data, "test", cfg.train.batch_size)
        test = mean_over_sessions(scores).bps
    return {
        "test_bps": test,
        "epochs": done,
        "best_epoch": trainer.best_epoch,
        "params": count_parameters(trainer.model),
        "seconds": time.monotonic() - start,
    }


def _search_row(trials: Sequence[Any], oracle: float | None, seconds: float, name: str) -> ModelRow:
    from vivit_hpo.search.record import TrialRecord
    from vivit_hpo.search.study import best_of

    best = best_of(trials)
    if best is None:
        return ModelRow("best ViViT", None, None, seconds, None, 0, f"{name}: no complete trial")
    r = TrialRecord.of(best)
    frac = r.test_bps / oracle if r.test_bps is not None and oracle and oracle > 0 else None
    return ModelRow(
        "best ViViT",
        r.test_bps,
        frac,
        seconds,
        r.params_count,
        r.epochs_run or r.epochs,
        f"trial #{r.number} of {len(trials)}",
    )


def models_table(rows: Sequence[ModelRow], minutes: float) -> FitTable:
    """The rows as one table: the model and its test score first."""
    t = FitTable(
        [
            Column("model", priority=9, wrap=True),
            Column("test BPS", "right", priority=8),
            Column("of oracle", "right", priority=7),
            Column("seconds", "right", priority=4),
            Column("parameters", "right", priority=5),
            Column("epochs", "right", priority=3),
            Column("detail", priority=6, wrap=True),
        ],
        title=f"models in {minutes:g} min",
        title_justify="left",
        box=box.SIMPLE,
    )
    for r in rows:
        t.add_row(
            r.model,
            signed(r.test_bps),
            percent(r.fraction_of_oracle),
            fixed(r.seconds, 0),
            grouped(r.params),
            count(r.epochs),
            r.detail,
        )
    return t


def run_models_bench(
    spec: StudySpec,
    *,
    minutes: float,
    workers: int,
    out: Path,
    console: Console,
    device: str = "cpu",
    storage_url: str | None = None,
) -> dict[str, Any]:
    """Run the search and train each yardstick for ``minutes`` each; write
    ``OUT/bench_models.json`` and print the table. Returns the JSON document.

    Raises:
        SpecError: the spec has no ``baselines`` to compare with.
    """
    import torch

    from vivit_hpo._live import LiveView
    from vivit_hpo.data.simulate import oracle_split_mean
    from vivit_hpo.search.coordinator import run_study
    from vivit_hpo.search.storage import open_storage
    from vivit_hpo.search.study import materialise_synth

    if not spec.baselines:
        raise SpecError("bench models: the spec has no `baselines`; list the yardsticks' configs")
    trees = yardstick_trees(spec)
    out = out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    data_dir: Path | None = None
    if spec.data.synth is not None:
        data_dir = materialise_synth(spec, out / spec.synth_folder())
        spec = spec.model_copy(update={"data": DataSpec(paths=[str(data_dir)])})
    paths = [Path(p) for p in spec.data.paths or []]
    oracle = None if data_dir is None else oracle_split_mean([data_dir])
    budget = spec.budget.model_copy(update={"timeout_minutes": minutes})
    search = spec.model_copy(
        update={
            "baselines": [],
            "budget": budget,
            "artifacts": spec.artifacts.model_copy(update={"dir": str(out / "artifacts")}),
        }
    )
    seconds = minutes * 60.0
    name = f"models-{dt.datetime.now().strftime('%Y%m%d-%H%M%S')}"
    spec_path = out / "specs" / f"{name}.yaml"
    atomic_write_text(spec_path, spec_to_text(search))
    url = storage_url or f"sqlite:///{out / 'bench.db'}"

    console.print(f"[bold]ViViT search[/bold]: study {name}, {workers} worker(s), {minutes:g} min")
    start = time.monotonic()
    finish_by = time.time() + seconds - min(_RESERVE_MAX_S, _RESERVE_FRACTION * seconds)
    with LiveView(console) as view:
        result = run_study(
            name, spec_path, url, devices=[device] * workers, progress=view, finish_by=finish_by
        )
    search_s = time.monotonic() - start
    if result.exit_code not in (0, 3):  # 3: the time limit, the expected end
        raise SpecError(f"bench models: study {name} ended with exit code {result.exit_code}")
    storage = open_storage(url)
    try:
        trials = storage.get_all_trials(storage.get_study_id_from_name(name), deepcopy=False)
    finally:
        storage.engine.dispose()
    rows = [_search_row(trials, oracle, search_s, name)]

    threads = _threads(workers) if device == "cpu" else torch.get_num_threads()
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        for label, tree in trees.items():
            console.print(f"[bold]{label}[/bold]: alone, {threads} thread(s), {minutes:g} min")
            got = train_for(
                tree,
                paths,
                seconds=seconds,
                epochs=spec.epochs,
                device=device,
                run_dir=out / "yardsticks" / label,
            )
            test = got["test_bps"]
            frac = test / oracle if test is not None and oracle and oracle > 0 else None
            detail = f"best epoch {got['best_epoch']}"
            if test is None or not math.isfinite(test):
                detail = "no test split" if test is None else detail
            rows.append(
                ModelRow(label, test, frac, got["seconds"], got["params"], got["epochs"], detail)
            )
    finally:
        torch.set_num_threads(before)

    doc = {
        "schema": SCHEMA,
        "spec": spec.description,
        "minutes": minutes,
        "workers": workers,
        "device": device,
        "threads": threads,
        "study": name,
        "storage": url.split("@")[-1],
        "oracle_test_bps": oracle,
        "rows": [asdict(r) for r in rows],
    }
    atomic_write_text(out / "bench_models.json", json.dumps(doc, indent=1))
    console.print(models_table(rows, minutes))
    return doc
