"""``vivit-hpo study ...``: create, list, show, best, export-best, enqueue, delete."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from vivit_hpo._output import (
    Column,
    FitTable,
    count,
    grouped,
    key_value_table,
    params,
    percent,
    seconds,
    sig,
    signed,
)
from vivit_hpo.cli._common import (
    Force,
    StorageURL,
    check_file_output,
    check_not_an_input,
    console,
)

group = typer.Typer(no_args_is_help=True, help="Create and inspect studies.")

Name = Annotated[str, typer.Argument(help="The study name.")]


def _names(spec: Any, trials: Any) -> tuple[str, set[str]]:
    """The study's objective (``bps``, ``corr``) and its sessions' response kinds."""
    from vivit_hpo.search.record import response_kinds

    return spec.objective.name, response_kinds(trials)


def _kinds_line(kinds: set[str]) -> None:
    from vivit_hpo.metrics import mixed_kinds_note

    note = mixed_kinds_note(kinds)
    if note is not None:
        console.print(f"note: {note}", soft_wrap=True)


def _standings(study: Any, storage: Any, name: str) -> FitTable | None:
    """The best ViViT beside each yardstick (the spec's ``baselines``); None without any."""
    from vivit_hpo.metrics import objective_label
    from vivit_hpo.search.record import response_kinds
    from vivit_hpo.search.study import oracle_test_bps, read_spec, standings

    trials = study.get_trials(deepcopy=False)
    rows = standings(trials, oracle_test_bps(read_spec(storage, name), name))
    if not rows:
        return None
    poisson = objective_label("bps", response_kinds(trials), header=True)
    table = FitTable(
        [
            Column("model", priority=9, wrap=True),
            Column("#", "right", priority=4),
            Column(f"test {poisson}", "right", priority=8),
            Column("of oracle", "right", priority=7),
            Column("train time", "right", priority=6),
            Column("parameters", "right", priority=5),
        ],
        title="the best ViViT and the yardsticks (test split)",
        title_justify="left",
    )
    for r in rows:
        table.add_row(
            r.label if r.state == "complete" else f"{r.label} ({r.state})",
            count(r.number),
            signed(r.test_bps),
            percent(r.fraction_of_oracle),
            seconds(r.seconds),
            grouped(r.params_count),
        )
    return table


@group.command("create")
def create(
    name: Name,
    spec: Annotated[Path, typer.Option("--spec", help="Study spec YAML (see studies/).")],
    storage: StorageURL = None,
    no_baseline: Annotated[
        bool,
        typer.Option("--no-baseline", help="Do not enqueue the base config as the first trial."),
    ] = False,
) -> None:
    """Validate SPEC and create study NAME (simulated data are written once, now).

    The base config is enqueued as the first trial (unless --no-baseline or `baseline: false`
    in the spec), so that the winner is at least as good as the config the search starts from.
    """
    from vivit_hpo.search.spec import check_study_name, effective_n_trials, load_spec
    from vivit_hpo.search.storage import mask_url, open_storage, resolve_storage_url
    from vivit_hpo.search.study import create_study, objective_hint

    check_study_name(name)
    parsed = load_spec(spec)  # validated before anything is written
    if no_baseline:
        parsed = parsed.model_copy(update={"baseline": False})
    st = open_storage(storage)
    create_study(st, name, parsed)
    first = ", the base config first" if parsed.baseline and parsed.sampler.name != "grid" else ""
    if parsed.baselines:
        names = ", ".join(Path(p).stem for p in parsed.baselines)
        first += f", and the yardstick(s) {names}"
    console.print(
        f"created study {name!r} in {mask_url(resolve_storage_url(storage))}: "
        f"{effective_n_trials(parsed)} trials of up to {parsed.epochs} epochs, "
        f"{parsed.sampler.name} sampler, {parsed.pruner.name} pruner"
        f"{first}; "
        f"artifacts in {parsed.study_dir(name)}"
        + (f", simulated data in {parsed.data_paths(name)[0]}" if parsed.data.synth else "")
    )
    hint = objective_hint(parsed, name)
    if hint is not None:
        console.print(hint, soft_wrap=True)
    console.print(f"start workers with `vivit-hpo worker {name}` (one per GPU, any machine)")


@group.command("list")
def list_(storage: StorageURL = None) -> None:
    """List the studies in the storage."""
    from vivit_hpo.search.storage import open_storage
    from vivit_hpo.search.study import list_studies

    rows = list_studies(open_storage(storage))
    table = FitTable(
        [
            Column("name", priority=10),
            Column("trials", "right", priority=8),
            Column("running", "right", priority=7),
            Column("complete", "right", priority=5),
            Column("pruned", "right", priority=3),
            Column("infeasible", "right", priority=2),
            Column("failed", "right", priority=4),
            Column("best", "right", priority=9),
            Column("description", priority=1, wrap=True),
        ],
        title="studies",
    )
    for r in rows:
        p = r["progress"]
        best = "-" if p.best_value is None else f"{signed(p.best_value)} {r['label']}"
        table.add_row(
            r["name"],
            f"{min(p.logical, p.n_trials)}/{p.n_trials}",
            count(p.running),
            count(p.complete),
            count(p.pruned),
            count(p.infeasible),
            count(p.failed),
            best,
            r["description"],
        )
    console.print(table if rows else "no studies")


@group.command("show")
def show(
    name: Name,
    storage: StorageURL = None,
    last: Annotated[int | None, typer.Option("--last", min=1, help="Only the last N.")] = None,
) -> None:
    """A table of the study's trials: state, value, epochs, parameters and why they ended."""
    from vivit_hpo.metrics import leads_with_corr, objective_label
    from vivit_hpo.search.storage import open_storage
    from vivit_hpo.search.study import load_study, read_spec, trial_rows

    st = open_storage(storage)
    study = load_study(st, name)
    trials = study.get_trials(deepcopy=False)
    objective, kinds = _names(read_spec(st, name), trials)
    rows = trial_rows(trials, objective)
    if last is not None:
        rows = rows[-last:]
    val, test = (f"{w} {objective_label(objective, kinds, header=True)}" for w in ("val", "test"))
    # The other validation score beside the value: the Poisson score of a corr study, the
    # correlation that leads a calcium study's Poisson score; none for spikes and BPS.
    other = "corr" if objective == "bps" else "bps"
    scores = [val, test]
    if objective == "corr" or leads_with_corr(kinds):
        name_ = f"val {objective_label(other, kinds, header=True)}"
        scores = [val, test, name_] if objective == "corr" else [name_, val, test]
    table = FitTable(
        [
            Column("#", "right", priority=10),
            Column("state", priority=9),
            *(Column(c, "right", priority=8 if c in (val, test) else 3) for c in scores),
            Column("epochs", "right", priority=4),
            Column("best", priority=2),
            Column("time", priority=1),
            Column("params", priority=6, wrap=True),
            Column("reason", priority=5, wrap=True),
        ],
        title=f"study {name}",
    )
    for r in rows:
        got = {val: signed(r.value), test: signed(r.test_value)}
        if len(scores) == 3:
            got[next(c for c in scores if c not in got)] = signed(r.other)
        table.add_row(
            count(r.number),
            r.state,
            *(got[c] for c in scores),
            count(r.epochs),
            count(r.best_epoch),
            seconds(r.seconds),
            params(r.params),
            r.reason,
        )
    console.print(table)
    _kinds_line(kinds)
    beside = _standings(study, st, name)
    if beside is not None:
        console.print(beside)


@group.command("best")
def best(name: Name, storage: StorageURL = None) -> None:
    """The best trial: its score, parameters and what it cost."""
    from vivit_hpo.metrics import leads_with_corr, objective_label
    from vivit_hpo.search.record import TrialRecord
    from vivit_hpo.search.storage import open_storage
    from vivit_hpo.search.study import best_trial, load_study, read_spec

    st = open_storage(storage)
    study = load_study(st, name)
    trials = study.get_trials(deepcopy=False)
    objective, kinds = _names(read_spec(st, name), trials)
    r = TrialRecord.of(best_trial(study))
    poisson = objective_label("bps", kinds, header=True)
    rows: list[tuple[str, str]] = []

    def score(label: str, v: float | None) -> None:
        if v is not None:
            rows.append((label, signed(v, 5)))

    if objective == "corr" or leads_with_corr(kinds):  # the correlation leads
        score("val r (mean over sessions)", r.value if objective == "corr" else r.val_corr)
        score("test r of that checkpoint", r.test_corr)
    if objective == "bps":
        score(f"val {poisson} (mean over sessions)", r.value or 0.0)
    else:
        score(f"val {poisson} at that epoch", r.val_bps)
    rows.append(("best epoch", count(r.best_epoch)))
    rows.append((f"val {poisson} per session", ""))
    rows += [(f"  {k}", signed(v, 5)) for k, v in (r.val_bps_per_session or {}).items()]
    if r.test_bps is not None:
        rows.append((f"test {poisson} of that checkpoint", signed(r.test_bps, 5)))
        rows += [(f"  {k}", signed(v, 5)) for k, v in (r.test_bps_per_session or {}).items()]
    elif r.test_bps_error:
        rows.append((f"test {poisson}", f"not scored: {r.test_bps_error}"))
    rows.append(("parameters", params(r.params)))
    if r.params_count is not None:
        rows.append(("model parameters", grouped(r.params_count)))
    if r.flops_per_sample is not None:
        rows.append(("training FLOPs/sample", sig(r.flops_per_sample)))
    if r.samples_per_s is not None:
        rows.append(("samples/s", grouped(r.samples_per_s)))
    if r.bins_per_s is not None:
        rows.append(("target bins/s", grouped(r.bins_per_s)))
    if r.peak_memory_mb is not None:
        rows.append(("peak memory", f"{grouped(r.peak_memory_mb)} MiB"))
    rows.append(("host / device", f"{r.host} / {r.device}"))
    rows.append(("trial folder", str(r.run_dir)))
    table = key_value_table(f"study {name}: best trial #{r.number}", rows)
    console.print(table)
    _kinds_line(kinds)
    beside = _standings(study, st, name)
    if beside is not None:
        console.print(beside)


@group.command("export-best")
def export_best(
    name: Name,
    out: Annotated[Path, typer.Option("--out", help="Run-config YAML to write.")],
    run_dir: Annotated[
        Path | None,
        typer.Option(
            "--run-dir",
            help="Also write the winner as a run folder (config and best checkpoint) that "
            "`vivit-hpo evaluate` and `predict` accept.",
        ),
    ] = None,
    storage: StorageURL = None,
    force: Force = False,
) -> None:
    """Write the best trial's run config: `vivit-hpo train --model OUT` trains it again."""
    from vivit_hpo.search.storage import open_storage, sqlite_path
    from vivit_hpo.search.study import ensure_data, load_study, read_spec
    from vivit_hpo.search.study import export_best as export

    check_not_an_input(out, [("storage database", sqlite_path(storage))])
    check_file_output(out, replace=force)
    st = open_storage(storage)
    spec = read_spec(st, name)
    from vivit_hpo.metrics import objective_label

    study = load_study(st, name)
    t = export(study, spec, out, run_dir=run_dir)
    label = objective_label(*_names(spec, study.get_trials(deepcopy=False)), header=True)
    console.print(f"wrote {out}: trial #{t.number}, val {label} {t.value:+.4f}")
    console.print(out.read_text().splitlines()[1].removeprefix("# "))
    if run_dir is not None:
        paths = " ".join(f"--data {p}" for p in ensure_data(spec, name))
        console.print(
            f"wrote the run folder {run_dir}; score it with "
            f"`vivit-hpo evaluate {run_dir} {paths} --out {run_dir}/test`"
        )


@group.command("enqueue")
def enqueue(
    name: Name,
    sets: Annotated[
        list[str],
        typer.Option(
            "--set",
            help="name=value fixes a space parameter (e.g. lr=1e-3); a dotted run-config key "
            "(e.g. train.batch_size=8) overrides it for this trial only. Repeatable.",
        ),
    ],
    storage: StorageURL = None,
) -> None:
    """Queue a trial with some values fixed; the next free worker runs it first."""
    from vivit_hpo.search.storage import open_storage
    from vivit_hpo.search.study import enqueue as enqueue_trial
    from vivit_hpo.search.study import load_study, read_spec

    st = open_storage(storage)
    got = enqueue_trial(load_study(st, name), read_spec(st, name), sets)
    console.print(f"enqueued in {name!r}: {params({**got['params'], **got['overrides']})}")


@group.command("delete")
def delete(
    name: Name,
    storage: StorageURL = None,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask.")] = False,
    keep_artifacts: Annotated[
        bool, typer.Option("--keep-artifacts", help="Keep the trial folders and data.")
    ] = False,
) -> None:
    """Delete study NAME from the storage, and its files unless --keep-artifacts.

    Its files are its own trial folders, and the rest of its artifact folder (the simulated
    data, the logs) unless another study of the same name (in another storage) still has trial
    folders there. Files go first: a removal that fails leaves the study to delete again.
    """
    from vivit_hpo.search.storage import open_storage
    from vivit_hpo.search.study import delete_study, read_spec

    st = open_storage(storage)
    folder = None if keep_artifacts else read_spec(st, name).study_dir(name)
    if not yes:
        what = "" if folder is None else f" and its files in {folder}"
        typer.confirm(f"delete study {name!r}{what}?", abort=True)
    removed = delete_study(st, name, artifacts=not keep_artifacts)
    gone = f" and {', '.join(str(p) for p in removed)}" if removed else ""
    kept = ""
    if folder is not None and folder not in removed and folder.exists():
        kept = f"; {folder} stays: another study of this name has trial folders there"
    console.print(f"deleted study {name!r}{gone}{kept}", soft_wrap=True)
