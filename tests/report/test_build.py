"""Writing reports and analyses, publishing to the dashboard, and the CLI commands."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import uuid
from pathlib import Path

import optuna
import pytest
from optuna_dashboard._custom_plot_data import get_plotly_graph_objects
from report_studies import build_small_study
from typer.testing import CliRunner

from vivit_hpo.cli import app
from vivit_hpo.report.build import (
    publish_to_dashboard,
    study_data_paths,
    write_run_analysis,
    write_study_report,
)
from vivit_hpo.report.snapshot import StudySnapshot, take_snapshot
from vivit_hpo.search.spec import load_spec, spec_from_text
from vivit_hpo.search.storage import open_storage
from vivit_hpo.search.study import create_study, read_spec

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture()
def full_study(sqlite_url: str, tiny_run: Path, sim_dir: Path) -> optuna.Study:
    """The small study whose best trial is the tiny trained run on the simulated sessions."""
    return build_small_study(sqlite_url, "full", best_dir=tiny_run, data=sim_dir)


def _graph_ids(study: optuna.Study) -> set[str]:
    attrs = study._storage.get_study_system_attrs(study._study_id)
    return set(get_plotly_graph_objects(attrs))


def test_report_with_the_best_checkpoint(
    full_study: optuna.Study, sqlite_url: str, tmp_path: Path
) -> None:
    out = tmp_path / "deep" / "report.html"
    result = write_study_report(sqlite_url, "full", out)
    titles = [s.title for s in result.sections]
    assert titles[:7] == [
        "Study summary",
        "Optimisation history",
        "Learning curves and pruning",
        "Parallel coordinates",
        "Hyperparameter importances",
        "BPS against cost",
        "Per-session BPS",
    ]
    assert titles[7:] == [
        "Best trial (6): Readout receptive fields",
        "Best trial (6): Attention",
    ]
    page = out.read_text()
    assert page.count("plotly.js v") == 1
    # Receptive fields, 3 attention figures and the register figure of the best trial.
    assert page.count('class="plotly-graph-div"') == 6 + 5
    assert "median distance between readout and true RF centres" in page
    assert "oracle (true rates)" in page  # from the data folder's oracle.json
    assert "Resolved run config of the best trial" in page and "embed_dim: 16" in page
    assert result.best_run_dir is not None and "best validation BPS 0.3500" in result.headline


def test_publish_uploads_the_report_and_replaces_its_figures(
    full_study: optuna.Study, sqlite_url: str, tmp_path: Path
) -> None:
    store = tmp_path / "artifacts"
    result = write_study_report(sqlite_url, "full", tmp_path / "r.html", analyze_best=False)
    artifact_id, ids = publish_to_dashboard(sqlite_url, "full", result, store)
    assert (store / artifact_id).read_bytes() == (tmp_path / "r.html").read_bytes()
    study = optuna.load_study(study_name="full", storage=sqlite_url)
    (meta,) = optuna.artifacts.get_all_artifact_meta(study)
    assert meta.artifact_id == artifact_id and meta.mimetype == "text/html"
    assert (
        set(ids)
        == _graph_ids(study)
        == {
            "vivit-hpo-curves-0",
            "vivit-hpo-cost-0",
            "vivit-hpo-sessions-0",
        }
    )
    publish_to_dashboard(sqlite_url, "full", result, store)
    assert len(optuna.artifacts.get_all_artifact_meta(study)) == 2
    assert len(_graph_ids(study)) == 3  # replaced, not added


def test_report_says_where_the_checkpoint_is_missing(
    small_study: optuna.Study, sqlite_url: str, tmp_path: Path
) -> None:
    result = write_study_report(sqlite_url, "small", tmp_path / "r.html")
    last = result.sections[-1]
    assert last.title == "Best trial's model"
    assert "no trial_dir user attribute" in str(last.blocks[0])
    assert "vivit-hpo analyze" in str(last.blocks[0])


def test_report_compares_with_a_cnn_study(
    small_study: optuna.Study, sqlite_url: str, tmp_path: Path
) -> None:
    cnn = optuna.create_study(storage=sqlite_url, study_name="cnn", direction="maximize")
    cnn.set_user_attr("spec", "base: {config: {model: {core: {kind: cnn}}}}\n")
    cnn.add_trial(optuna.trial.create_trial(value=0.2, user_attrs={"params_count": 50_000}))
    result = write_study_report(
        sqlite_url, "small", tmp_path / "r.html", compare="cnn", analyze_best=False
    )
    (sec,) = [s for s in result.sections if s.anchor == "baseline"]
    table = next(b for b in sec.blocks if hasattr(b, "rows"))
    assert [r[0] for r in table.rows] == ["vivit", "cnn (cnn)"]
    assert [r[2] for r in table.rows] == ["0.3500", "0.2000"]


def test_study_data_paths_of_a_simulated_study(tmp_path: Path) -> None:
    study = optuna.create_study(study_name="sim")
    spec = f"data: {{synth: {{sessions: 1}}}}\nartifacts: {{dir: {tmp_path}}}\n"
    # The folder the workers write, keyed by the recipe (StudySpec.data_paths), not sim/data.
    folder = tmp_path / "sim" / spec_from_text(spec).synth_folder()
    folder.mkdir(parents=True)
    (tmp_path / "sim" / "data").mkdir()
    (tmp_path / "sim" / "data" / "sim00.h5").touch()  # another recipe's, or an old version's
    study.set_user_attr("spec", spec)
    assert study_data_paths(StudySnapshot.from_study(study)) == []  # no session file yet
    (folder / "sim00.h5").touch()
    assert study_data_paths(StudySnapshot.from_study(study)) == [folder.resolve()]


def test_the_report_finds_the_data_where_vivit_hpo_artifacts_puts_them(
    sqlite_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The study is made on one machine; another mounts the same artifact folder elsewhere and
    # says so with VIVIT_HPO_ARTIFACTS: the report looks where the study's workers look.
    monkeypatch.delenv("VIVIT_HPO_ARTIFACTS", raising=False)
    synth = {"sessions": 1, "neurons": 4, "frames": 600, "size": [8, 8]}
    spec_file = tmp_path / "spec.yaml"
    spec_file.write_text(json.dumps({"data": {"synth": synth}, "artifacts": {"dir": "here"}}))
    monkeypatch.setenv("VIVIT_HPO_HOME", str(tmp_path))
    storage = open_storage(sqlite_url)
    create_study(storage, "mounted", load_spec(spec_file))  # simulates into here/mounted/
    (tmp_path / "here").rename(tmp_path / "there")  # the same folder, mounted elsewhere
    monkeypatch.setenv("VIVIT_HPO_ARTIFACTS", str(tmp_path / "there"))
    (data,) = read_spec(storage, "mounted").data_paths("mounted")  # what its workers read
    assert data.parent == tmp_path / "there" / "mounted" and any(data.glob("*.h5"))
    snap = take_snapshot(storage, "mounted")
    assert snap.spec_text is not None and str(tmp_path / "here") in snap.spec_text
    assert study_data_paths(snap) == [data]
    result = write_study_report(storage, "mounted", tmp_path / "r.html", analyze_best=False)
    assert "oracle BPS (mean over sessions)" in result.path.read_text()
    storage.engine.dispose()


def test_write_run_analysis(tiny_run: Path, sim_dir: Path, tmp_path: Path) -> None:
    html, data = write_run_analysis(tiny_run, [sim_dir / "sim01.h5"], tmp_path / "an")
    assert html.name == "analysis.html" and html.read_text().count("plotly.js v") == 1
    d = json.loads(data.read_text())
    assert d["attention_session"] == "sim01" and d["attention"]["grid"] == [4, 4]
    assert [s["session"] for s in d["receptive_fields"]["sessions"]] == ["sim00", "sim01"]


@pytest.mark.postgres
def test_report_from_postgresql(pg_study, tmp_path: Path) -> None:
    url, study = pg_study
    result = write_study_report(url, study.study_name, tmp_path / "r.html")
    assert "best validation BPS 0.3500 by trial 6" in result.headline
    assert (tmp_path / "r.html").read_text().count("plotly.js v") == 1


# -- the CLI --------------------------------------------------------------------------------

runner = CliRunner()


def test_cli_report_and_publish(full_study: optuna.Study, sqlite_url: str, tmp_path: Path) -> None:
    out = tmp_path / "r.html"
    args = ["report", "full", "--storage", sqlite_url, "--out", str(out)]
    res = runner.invoke(app, [*args, "--artifacts", str(tmp_path / "a"), "--no-analysis"])
    assert res.exit_code == 0, res.output
    text = " ".join(res.output.split())  # rich wraps long lines
    assert "best validation BPS 0.3500 by trial 6" in text and out.is_file()
    assert "report uploaded as artifact" in text
    assert len(list((tmp_path / "a").iterdir())) == 1


def test_cli_report_replaces_an_existing_file_only_with_force(
    small_study: optuna.Study, sqlite_url: str, tmp_path: Path
) -> None:
    out = tmp_path / "r.html"
    out.write_text("last week's report")
    kept = tmp_path / "kept.html"  # another name of the same file: a rename leaves it whole
    os.link(out, kept)
    args = ["report", "small", "--storage", sqlite_url, "--no-analysis", "--no-dashboard"]
    res = runner.invoke(app, [*args, "--out", str(out)])
    assert res.exit_code == 2
    assert res.output == (
        f"error: --out {out}: already exists; pass --force to replace it, or another --out\n"
    )
    assert out.read_text() == "last week's report"
    res = runner.invoke(app, [*args, "--out", str(out), "--force"])
    assert res.exit_code == 0, res.output
    assert out.read_text().count("plotly.js v") == 1
    # Written to a temporary file, then renamed over the old one, not written into it.
    assert kept.read_text() == "last week's report"
    assert sorted(p.name for p in tmp_path.glob("*.html")) == ["kept.html", "r.html"]
    assert not list(tmp_path.glob(".r.html.*"))  # no temporary file left
    # Never over the study's database, even with --force.
    db = Path(sqlite_url.removeprefix("sqlite:///"))
    res = runner.invoke(app, [*args, "--out", str(db), "--force"])
    assert res.exit_code == 2
    assert res.output == (
        f"error: --out {db}: is the storage database {db} that this command reads (writing it "
        "would destroy the input); pass another --out\n"
    )
    assert optuna.load_study(study_name="small", storage=sqlite_url).best_value == 0.35


def test_cli_errors_are_one_line_and_exit_2(
    small_study: optuna.Study, sqlite_url: str, tmp_path: Path
) -> None:
    res = runner.invoke(app, ["report", "nope", "--storage", sqlite_url, "--out", "x.html"])
    assert res.exit_code == 2
    assert res.output.strip().splitlines()[-1].startswith("error: study 'nope' does not exist")
    res = runner.invoke(app, ["report", "small", "--storage", "mysql://u:secret@h/db"])
    assert res.exit_code == 2 and "secret" not in res.output
    res = runner.invoke(
        app, ["analyze", str(tmp_path / "none"), "--data", str(tmp_path), "--out", str(tmp_path)]
    )
    assert res.exit_code == 2 and "no such run directory" in res.output
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        res = runner.invoke(app, ["dashboard", "--storage", sqlite_url, "--port", str(port)])
    assert res.exit_code == 2 and f"port {port} on 127.0.0.1 is in use" in res.output


def test_cli_analyze(tiny_run: Path, sim_dir: Path, tmp_path: Path) -> None:
    args = ["analyze", str(tiny_run), "--data", str(sim_dir), "--out", str(tmp_path / "an")]
    res = runner.invoke(app, [*args, "--samples", "8", "--session", "sim01"])
    assert res.exit_code == 0, res.output
    d = json.loads((tmp_path / "an" / "analysis.json").read_text())
    assert d["attention_samples"] == 8 and d["attention_session"] == "sim01"
    res = runner.invoke(app, [*args, "--session", "other"])
    assert res.exit_code == 2
    assert "session 'other' is not both in the run and in the data" in " ".join(res.output.split())


def test_report_as_a_real_process(small_study: optuna.Study, sqlite_url: str, tmp_path: Path):
    out = tmp_path / f"{uuid.uuid4().hex}.html"
    env = {**os.environ, "VIVIT_HPO_ARTIFACT_STORE": str(tmp_path / "store")}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    proc = subprocess.run(
        [sys.executable, "-m", "vivit_hpo", "report", "small", "--out", str(out)],
        env={**env, "VIVIT_HPO_STORAGE": sqlite_url},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert out.stat().st_size > 1_000_000  # plotly.js inlined
    assert any((tmp_path / "store").iterdir())
