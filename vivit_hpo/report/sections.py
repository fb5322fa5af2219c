"""The report's sections: figure data from :mod:`.data`/:mod:`.analysis`, drawn by :mod:`.figures`.

Each ``*_section`` returns a :class:`~vivit_hpo.report.html.Section` with its figures, tables and
notes; a section whose data is missing says why instead of drawing an empty plot.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping
from typing import Any

from vivit_hpo.metrics import mixed_kinds_note
from vivit_hpo.report import figures
from vivit_hpo.report.analysis import AttentionInfo, ReceptiveFieldInfo
from vivit_hpo.report.data import (
    ImportanceInfo,
    ablation_info,
    baseline_info,
    cost_info,
    curves_info,
    history_info,
    importance_info,
    parallel_info,
    sessions_info,
    standings_info,
    summary_info,
)
from vivit_hpo.report.html import Section, Table
from vivit_hpo.report.snapshot import StudySnapshot

__all__ = ["analysis_sections", "fmt", "headline", "study_sections"]


def fmt(value: Any, digits: int = 4) -> str:
    """A compact text form of a number (or any value) for tables."""
    if isinstance(value, bool) or value is None:
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if not math.isfinite(value):
            return str(value)
        if value != 0 and (abs(value) >= 1e6 or abs(value) < 1e-3):
            return f"{value:.3e}"
        return f"{value:.{digits}g}" if abs(value) >= 1 else f"{value:.{digits}f}"
    return str(value)


def headline(snap: StudySnapshot, importance: ImportanceInfo | None = None) -> str:
    """One paragraph: best BPS (for calcium traces: the best trial's correlation, then its
    Poisson gain), where trials were pruned, which hyperparameters mattered."""
    s = summary_info(snap)
    c = curves_info(snap)
    parts = [f"{s.num_trials} trials: " + ", ".join(f"{n} {k}" for k, n in s.counts.items() if n)]
    if s.best_number is not None:
        frac = ""
        if s.oracle_mean and s.best_value is not None:
            frac = (
                f" ({s.best_value / s.oracle_mean:.0%} of the oracle's {s.oracle_mean:.3f})"
                if s.best_value > 0 < s.oracle_mean
                else f" (the oracle: {s.oracle_mean:.3f})"
            )
        if s.objective == "corr":
            parts.append(
                f"best validation {s.metric} {fmt(s.best_value)} by trial {s.best_number} "
                f"({s.poisson_metric} {fmt(s.best_poisson)})"
            )
        elif snap.calcium:
            parts.append(
                f"best trial {s.best_number}: validation correlation r {fmt(s.best_corr)}, "
                f"{s.metric} {fmt(s.best_value)}{frac}"
            )
        else:
            parts.append(f"best validation BPS {fmt(s.best_value)} by trial {s.best_number}{frac}")
    mixed = mixed_kinds_note(snap.response_kinds())
    if mixed is not None:
        parts.append(mixed)
    if c.pruned_at:
        parts.append(
            "pruned at epoch " + ", ".join(f"{e}: {n} trial(s)" for e, n in c.pruned_at.items())
        )
    if importance is not None and importance.importances and not importance.tied:
        top = ", ".join(f"{k} ({v:.2f})" for k, v in list(importance.importances.items())[:3])
        rough = "" if importance.reliable else f" (rough: {importance.num_trials} trials)"
        parts.append(f"most important{rough}: {top}")
    elif importance is not None:
        parts.append(f"importances: none yet ({importance.num_trials} complete trials)")
    return "; ".join(parts) + "."


def _kv_table(items: Mapping[str, Any]) -> Table:
    return Table(("", "value"), tuple((k, fmt(v)) for k, v in items.items()))


def summary_section(snap: StudySnapshot, best_config_text: str | None) -> Section:
    info = summary_info(snap, best_config_text)
    sec = Section(
        "summary",
        "Study summary",
        "Trials by how they ended, the compute they used, the budget and the best trial.",
    )
    rows: dict[str, Any] = {
        "study": info.name,
        "direction": info.direction,
        "trials": info.num_trials,
    }
    rows.update({f"trials {k}": n for k, n in info.counts.items() if n})
    rows["GPU-hours (trials on cuda)"] = round(info.hours["gpu"], 3)
    rows["CPU-hours (trials on cpu)"] = round(info.hours["cpu"], 3)
    if info.hours["unknown"]:
        rows["hours on an unrecorded device"] = round(info.hours["unknown"], 3)
    for b in info.budget:
        limit = f" of {fmt(b.limit)}" if b.limit is not None else " (no limit in the spec)"
        rows[f"budget: {b.label}"] = f"{fmt(round(b.used, 3))}{limit} {b.unit}"
    if info.best_number is not None:
        rows["best trial"] = info.best_number
        if info.objective == "corr":
            rows[f"best validation {info.metric}"] = info.best_value
            rows[f"its validation {info.poisson_metric}"] = info.best_poisson
        else:
            if snap.calcium:  # the correlation leads; the objective is no bits per spike
                rows["its validation correlation (r)"] = info.best_corr
            rows[f"best validation {info.metric}"] = info.best_value
    if info.oracle_mean is not None:
        rows[f"oracle {info.metric} (mean over sessions)"] = info.oracle_mean
    sec.add(_kv_table(rows))
    if info.best_number is not None:
        sec.note(f"Parameters of the best trial ({info.best_number}):")
        sec.add(_kv_table(info.best_params) if info.best_params else Table(("",), ()))
        if info.best_attrs:
            sec.note("What the best trial recorded:")
            sec.add(_kv_table(info.best_attrs))
    if info.best_config_text:
        sec.note("Resolved run config of the best trial (config.yaml of its run dir):")
        sec.pre(info.best_config_text)
    if info.spec_text:
        sec.note("Study spec:")
        sec.pre(info.spec_text)
    else:
        sec.note("The study has no 'spec' user attribute; budgets are shown without limits.")
    return sec


def history_section(snap: StudySnapshot) -> Section:
    info = history_info(snap)
    sec = Section(
        "history",
        "Optimisation history",
        f"Validation {snap.metric} of each complete trial by trial number; the line is the best "
        "so far.",
    )
    if not info.numbers:
        return sec.note("No complete trial.")
    return sec.add(figures.history_figure(info, snap.metric))


def curves_section(snap: StudySnapshot) -> Section:
    info = curves_info(snap)
    sec = Section(
        "curves",
        "Learning curves and pruning",
        f"Best validation {snap.metric} so far after each epoch (the intermediate values the "
        "pruner sees, "
        "ending at the trial's value), coloured by "
        "what the trial ended as; an x marks the epoch at which a pruned trial was stopped.",
    )
    if not info.curves:
        return sec.note("No trial reported an intermediate value yet.")
    sec.add(figures.curves_figure(info, snap.metric))
    if info.pruned_at:
        sec.add(
            Table(
                ("pruned after epoch", "trials"),
                tuple((str(e), str(n)) for e, n in info.pruned_at.items()),
            )
        )
    else:
        sec.note("No trial was pruned.")
    return sec


def parallel_section(snap: StudySnapshot) -> Section:
    info = parallel_info(snap)
    sec = Section(
        "parallel",
        "Parallel coordinates",
        f"Each line is a complete trial, coloured by its validation {snap.metric}.",
    )
    if info.objective is None or len(info.numbers) < 2 or not info.dims:
        return sec.note("Needs at least 2 complete trials with a varying parameter.")
    sec.add(figures.parallel_figure(info, snap.metric))
    if info.omitted:
        sec.note(
            "Left out (conditional, absent in some trials, or fixed): " + ", ".join(info.omitted)
        )
    return sec


def importance_section(info: ImportanceInfo, metric: str = "BPS") -> Section:
    sec = Section(
        "importance",
        "Hyperparameter importances",
        f"{info.evaluator} over {info.num_trials} complete trials: how much of the variation "
        f"in validation {metric} each hyperparameter explains (normalised to sum to 1).",
    )
    if info.importances:
        sec.add(figures.importance_figure(info))
    if info.note:
        sec.note(info.note)
    return sec


def cost_section(snap: StudySnapshot) -> Section:
    info = cost_info(snap)
    sec = Section(
        "cost",
        f"{snap.metric} against cost",
        f"Complete trials' validation {snap.metric} against parameters, training FLOPs per "
        "sample and "
        "training throughput; the red line joins the Pareto front (no trial is both better and "
        "cheaper).",
    )
    if not info.panels:
        return sec.note(
            "No complete trial recorded params_count, flops_per_sample or samples_per_s."
        )
    sec.add(figures.cost_figure(info, snap.metric))
    front = sorted(
        {n for p in info.panels for n, f in zip(p.numbers, p.on_front, strict=True) if f}
    )
    sec.note("Trials on a Pareto front: " + ", ".join(str(n) for n in front))
    return sec


def sessions_section(snap: StudySnapshot, top: int = 5) -> Section:
    info = sessions_info(snap, top)
    sec = Section(
        "sessions",
        f"Per-session {snap.poisson_metric}",
        f"Validation {snap.poisson_metric} per session of the {len(info.numbers)} best complete "
        "trial(s)"
        + (
            f", with the oracle (the true rates' {snap.poisson_metric}) of simulated sessions."
            if any(o is not None for o in info.oracle)
            else "."
        ),
    )
    if not info.numbers:
        return sec.note("No complete trial recorded val_bps_per_session.")
    sec.add(figures.sessions_figure(info, snap.poisson_metric))
    # One row per session, so that tens of sessions read down the page.
    known = any(o is not None for o in info.oracle)
    header = ("session", *(f"trial {n}" for n in info.numbers))
    if known:
        header += ("oracle", f"trial {info.numbers[0]} / oracle")
    rows = []
    for j, name in enumerate(info.sessions):
        row = [name, *(fmt(r[j]) for r in info.bps)]
        if known:
            o, b = info.oracle[j], info.bps[0][j]
            row += [
                fmt(o) if o is not None else "",
                f"{b / o:.0%}" if o and o > 0 and b > 0 else "",
            ]
        rows.append(tuple(row))
    sec.add(Table(header, tuple(rows)))
    return sec


def ablation_section(snap: StudySnapshot) -> Section | None:
    info = ablation_info(snap)
    if info is None:
        return None
    spread = f"the spread over {info.seed_param}" if info.seed_param else "the spread over trials"
    sec = Section(
        "ablation",
        "Ablation grid",
        f"Mean validation {snap.metric} at each level of each factor, averaged over the other "
        "factors, "
        f"± {spread} (s.d.); Δ is the difference to the factor's best level. "
        f"{info.num_complete} complete grid points, {info.num_excluded} not complete.",
    )
    if not info.factors:
        return sec.note("No factor with two or more levels among the complete trials.")
    sec.add(figures.ablation_figure(info, snap.metric))
    sec.add(
        Table(
            ("factor", "level", f"mean {snap.metric}", "s.d.", "Δ vs best", "trials", "seeds"),
            tuple(
                (
                    r.factor,
                    r.level,
                    fmt(r.mean),
                    fmt(r.std),
                    fmt(r.delta),
                    str(r.num_trials),
                    str(r.num_seeds),
                )
                for r in info.rows
            ),
        )
    )
    return sec


def baseline_section(snap: StudySnapshot, compare: StudySnapshot | None) -> Section | None:
    info = baseline_info(snap, compare)
    if info is None:
        if compare is not None:
            return Section("baseline", "ViViT against the CNN baseline").note(
                f"Neither {snap.name!r} nor {compare.name!r} has a complete trial to compare."
            )
        return None
    sec = Section(
        "baseline",
        "ViViT against the CNN baseline",
        f"Validation {snap.metric} of every complete trial per model family (core kind, or "
        "study), and "
        "against its parameter count.",
    )
    m = snap.metric
    sec.add(figures.baseline_figure(info, m))
    sec.add(
        Table(
            ("family", "complete trials", f"best {m}", "best trial", f"median {m}"),
            tuple(
                (
                    g.label,
                    str(len(g.values)),
                    fmt(g.best_value),
                    str(g.best_number),
                    fmt(statistics.median(g.values)),
                )
                for g in info.groups
            ),
        )
    )
    return sec


def yardstick_section(snap: StudySnapshot) -> Section | None:
    """The best ViViT beside the lab's yardsticks (the spec's ``baselines``), or None."""
    rows = standings_info(snap)
    if not rows:
        return None
    sec = Section(
        "yardsticks",
        "The best ViViT and the yardsticks",
        f"Test {snap.poisson_metric} of the search's best trial (never a yardstick) and of each "
        "yardstick's trial, "
        "trained on the same data with the same epoch budget.",
    )
    sec.add(
        Table(
            (
                "model",
                "trial",
                "state",
                f"test {snap.poisson_metric}",
                "of oracle",
                "training time",
                "parameters",
            ),
            tuple(
                (
                    r.label,
                    "-" if r.number is None else str(r.number),
                    r.state,
                    fmt(r.test_bps),
                    "-" if r.fraction_of_oracle is None else f"{r.fraction_of_oracle:.0%}",
                    "-" if r.seconds is None else f"{r.seconds:.0f} s",
                    "-" if r.params_count is None else f"{r.params_count:,}",
                )
                for r in rows
            ),
        )
    )
    return sec


def study_sections(
    snap: StudySnapshot,
    *,
    compare: StudySnapshot | None = None,
    best_config_text: str | None = None,
    importance: ImportanceInfo | None = None,
) -> list[Section]:
    """All study-level sections of the report, in reading order.

    ``importance`` saves recomputing the importances when the caller has them already.
    """
    importance = importance or importance_info(snap)
    sections = [
        summary_section(snap, best_config_text),
        history_section(snap),
        curves_section(snap),
        parallel_section(snap),
        importance_section(importance, snap.metric),
        cost_section(snap),
        sessions_section(snap),
    ]
    extras = (yardstick_section(snap), ablation_section(snap), baseline_section(snap, compare))
    for extra in extras:
        if extra is not None:
            sections.append(extra)
    return sections


def analysis_sections(
    rf: ReceptiveFieldInfo | None,
    att: AttentionInfo | None,
    *,
    title_prefix: str = "",
    notes: tuple[str, ...] = (),
) -> list[Section]:
    """Receptive-field and attention sections of one trained model."""
    rf_sec = Section(
        "receptive-fields",
        f"{title_prefix}Readout receptive fields",
        "Each unit's Gaussian readout: its mean position (dot) and one standard deviation "
        "(ellipse) over the stimulus frame, per session.",
    )
    if rf is not None and rf.sessions:
        rf_sec.add(figures.receptive_field_figure(rf))
    else:
        rf_sec.note("No Gaussian readout to show.")
    for n in notes:
        rf_sec.note(n)
    out = [rf_sec]
    att_sec = Section(
        "attention",
        f"{title_prefix}Attention",
        "Attention of the ViViT core on validation samples, averaged over the batch.",
    )
    if att is None:
        att_sec.note("No attention maps (not a ViViT core, or no data to run it on).")
        return [*out, att_sec]
    att_sec.add(figures.spatial_attention_figure(att))
    att_sec.add(figures.temporal_attention_figure(att))
    att_sec.add(figures.attention_entropy_figure(att))
    if att.num_registers:
        att_sec.add(figures.register_figure(att))
    else:
        att_sec.note("The model has no register tokens.")
    return [*out, att_sec]
