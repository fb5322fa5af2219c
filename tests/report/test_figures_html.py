"""The drawing layer and the page: each figure shows its data; the page is one offline file."""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import optuna
import plotly.graph_objects as go
from report_studies import T0, build_small_study

from vivit_hpo.report import figures
from vivit_hpo.report.analysis import attention_info, receptive_field_info
from vivit_hpo.report.data import (
    ablation_info,
    cost_info,
    curves_info,
    history_info,
    importance_info,
    parallel_info,
    sessions_info,
)
from vivit_hpo.report.html import Section, Table, render_page
from vivit_hpo.report.sections import analysis_sections, fmt, headline, study_sections
from vivit_hpo.report.snapshot import StudySnapshot


def _snap(study: optuna.Study) -> StudySnapshot:
    return StudySnapshot.from_study(study, taken_at=T0 + timedelta(hours=11))


def test_study_figures_carry_their_data(small_study: optuna.Study) -> None:
    snap = _snap(small_study)
    fig = figures.history_figure(history_info(snap))
    assert [t.name for t in fig.data] == ["complete trial", "best so far"]
    assert list(fig.data[1].y) == [0.1, 0.3, 0.3, 0.3, 0.35]

    fig = figures.curves_figure(curves_info(snap))
    lines = [t for t in fig.data if t.mode == "lines+markers"]
    assert len(lines) == 8
    crosses = [t for t in fig.data if t.mode == "markers"]
    assert [list(t.x) for t in crosses] == [[1], [2]]  # where the two pruned trials stopped
    assert {t.line.color for t in lines if t.name == "pruned"} == {figures.STATUS_COLORS["pruned"]}

    fig = figures.parallel_figure(parallel_info(snap))
    (pc,) = fig.data
    assert [d.label for d in pc.dimensions] == ["embed_dim", "lr (log10)", "objective"]

    fig = figures.importance_figure(importance_info(snap))
    assert set(fig.data[0].y) == {"embed_dim", "lr"}

    fig = figures.cost_figure(cost_info(snap))
    fronts = [t for t in fig.data if t.name == "Pareto front"]
    assert len(fronts) == 3 and sorted(fronts[0].x) == [1000, 4000, 5000]

    fig = figures.sessions_figure(sessions_info(snap, top=2))
    assert [t.name for t in fig.data] == ["trial 6", "trial 1", "oracle (true rates)"]


def test_ablation_figure_has_one_panel_per_factor() -> None:
    study = optuna.create_study(
        direction="maximize", sampler=optuna.samplers.GridSampler({"a": [0, 1], "b": [0, 1]})
    )
    study.optimize(
        lambda t: t.suggest_categorical("a", [0, 1]) + t.suggest_categorical("b", [0, 1]), 4
    )
    info = ablation_info(StudySnapshot.from_study(study))
    assert info is not None
    fig = figures.ablation_figure(info)
    assert len(fig.data) == 2 and list(fig.data[0].x) == ["0", "1"]
    # No seed parameter: the spread is over the trials at each level (b = 0 and 1).
    assert np.allclose(fig.data[0].error_y.array, [np.sqrt(0.5)] * 2)


def _attention():
    s = 2 + 4
    spatial = [np.full((2, s, s), 1 / s)] * 2
    temporal = [np.stack([np.tril(np.ones((3, 3))) / np.arange(1, 4)[:, None]] * 2)]
    return attention_info(spatial, temporal, (2, 2), 2)


def test_analysis_figures() -> None:
    rf = receptive_field_info(
        {"a": np.zeros((3, 2)), "b": np.ones((2, 2)) * 0.5},
        {"a": np.full((3, 2), 0.1), "b": np.full((2, 2), 0.1)},
        {"a": (10, 20), "b": (8, 8)},
        truth={"a": (np.zeros((3, 2)), None)},
    )
    fig = figures.receptive_field_figure(rf)
    centres = [t for t in fig.data if t.name == "readout centre"]
    assert [list(t.x) for t in centres] == [[10.0, 10.0, 10.0], [6.0, 6.0]]
    assert any(t.name == "true centre (simulated)" for t in fig.data)
    att = _attention()
    assert len(figures.spatial_attention_figure(att).data) == 2 * len(att.queries) * 2
    assert len(figures.temporal_attention_figure(att).data) == 1
    assert len(figures.attention_entropy_figure(att).data) == 2
    reg = figures.register_figure(att)
    assert np.allclose(reg.data[0].z, 2 / 6)


def test_page_inlines_plotly_once_and_escapes_text(small_study: optuna.Study) -> None:
    snap = _snap(small_study)
    sections = study_sections(snap)
    sections.append(Section("x", "<b>odd</b> & title", "a <script> in the intro").note("<i>"))
    page = render_page("Report <1>", sections, subtitle=headline(snap))
    assert page.count("plotly.js v") == 1  # the library, once
    n_figs = sum(isinstance(b, go.Figure) for s in sections for b in s.blocks)
    assert page.count('class="plotly-graph-div"') == n_figs == 6
    assert "&lt;b&gt;odd&lt;/b&gt; &amp; title" in page and "<b>odd</b>" not in page
    assert "a &lt;script&gt; in the intro" in page
    assert "<title>Report &lt;1&gt;</title>" in page
    assert "<script src=" not in page  # nothing to fetch: works offline


def test_headline_says_best_pruning_and_importance(small_study: optuna.Study) -> None:
    snap = _snap(small_study)
    text = headline(snap, importance_info(snap))
    assert "10 trials: 5 complete, 2 pruned, 1 infeasible, 1 failed, 1 running" in text
    assert "best validation BPS 0.3500 by trial 6 (70% of the oracle's 0.500)" in text
    assert "pruned at epoch 1: 1 trial(s), 2: 1 trial(s)" in text
    assert "most important (rough: 5 trials): " in text


def test_a_calcium_study_leads_with_r_and_never_says_bits_per_spike(sqlite_url: str) -> None:
    from vivit_hpo.metrics import GAIN_LABEL

    snap = _snap(build_small_study(sqlite_url, "ca", calcium=True))
    assert snap.calcium and snap.metric == GAIN_LABEL
    text = headline(snap, importance_info(snap))
    assert f"best trial 6: validation correlation r 0.5500, {GAIN_LABEL} 0.3500" in text
    sections = study_sections(snap)
    page = render_page("ca", sections, subtitle=text)
    # What the page says (the inlined plotly library and the figures' JSON are code).
    said = [page.split("<script")[0]]
    for sec in sections:
        said += [sec.title, sec.intro]
        for b in sec.blocks:
            if isinstance(b, Table):
                said += [*b.header, *(c for row in b.rows for c in row)]
            elif isinstance(b, str | tuple):
                said.append(b if isinstance(b, str) else b[1])
    words = "\n".join(said)
    assert "BPS" not in words and "bits per spike" not in words
    assert "test_corr" in words and f"test {GAIN_LABEL}" in words  # the best trial's record
    summary = next(s for s in sections if s.anchor == "summary")
    (table, *_) = [b for b in summary.blocks if isinstance(b, Table)]
    keys = [row[0] for row in table.rows]
    assert keys.index("its validation correlation (r)") < keys.index(
        f"best validation {GAIN_LABEL}"
    )
    figs = [b for s in sections for b in s.blocks if isinstance(b, go.Figure)]
    titles = [f.layout.title.text for f in figs] + [str(f.layout.yaxis.title.text) for f in figs]
    assert not any("BPS" in t for t in titles)
    assert f"Validation {GAIN_LABEL} against cost" in titles
    # A spike study keeps its names.
    spikes = _snap(build_small_study(sqlite_url, "sp"))
    assert not spikes.calcium and spikes.metric == "BPS"


def test_sections_of_a_study_without_complete_trials_say_why() -> None:
    study = optuna.create_study(direction="maximize")
    sections = study_sections(StudySnapshot.from_study(study))
    page = render_page("empty", sections)
    assert "No complete trial." in page and "only 0 complete" in page
    assert "plotly.js v" not in page  # no figure, no library


def test_analysis_sections_without_attention() -> None:
    secs = analysis_sections(None, None, notes=("why",))
    assert [s.anchor for s in secs] == ["receptive-fields", "attention"]
    assert secs[0].blocks == ["No Gaussian readout to show.", "why"]
    assert any("No attention maps" in b for b in secs[1].blocks if isinstance(b, str))


def test_table_and_number_format() -> None:
    page = render_page("t", [Section("t", "t").add(Table(("k", "v"), (("a", "1,234"),)))])
    assert '<td class="num">1,234</td>' in page and "<td>a</td>" in page
    assert fmt(1234) == "1,234" and fmt(0.123456) == "0.1235" and fmt(2.5e-5) == "2.500e-05"
    assert fmt(12.3456) == "12.35" and fmt(None) == "None"


def test_per_session_section_reads_down_the_page_for_twenty_sessions() -> None:
    from vivit_hpo.report.sections import sessions_section

    names = [f"m{k:02d}" for k in range(20)]
    study = optuna.create_study(direction="maximize")
    for i in range(3):
        per = {n: 0.1 * i + 0.01 * k for k, n in enumerate(names)}
        study.add_trial(
            optuna.trial.create_trial(
                value=sum(per.values()) / 20, user_attrs={"val_bps_per_session": per}
            )
        )
    sec = sessions_section(_snap(study), top=3)
    (table,) = [x for x in sec.blocks if isinstance(x, Table)]
    assert table.header == ("session", "trial 2", "trial 1", "trial 0")
    assert [row[0] for row in table.rows] == names  # one row per session
    (fig,) = [x for x in sec.blocks if isinstance(x, go.Figure)]
    assert [t.name for t in fig.data] == ["trial 2", "trial 1", "trial 0"]
    assert list(fig.data[0].x) == names
