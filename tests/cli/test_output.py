"""The table layer (``vivit_hpo._output``) and every table of the CLI in an 80-column
terminal: the real commands on tiny real data (simulated sessions, an NWB and a Sensorium
import, a SQLite study searched by ``vivit-hpo run``), each output no wider than 80 columns and
each header whole, or named as hidden."""

from __future__ import annotations

import io
import math
import re
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path

import pytest
import yaml
from rich.console import Console
from rich.table import Table
from typer.testing import CliRunner, Result

from vivit_hpo._output import (
    Column,
    FitTable,
    compact,
    count,
    fixed,
    grouped,
    key_value_table,
    params,
    percent,
    seconds,
    sig,
    signed,
)
from vivit_hpo.cli import app
from vivit_hpo.cli._common import console
from vivit_hpo.data import synthesize

TESTS = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(TESTS / "data"))
sys.path.insert(0, str(TESTS / "search"))
from nwb_helpers import session_to_nwb  # noqa: E402
from search_helpers import tiny_spec_tree  # noqa: E402
from sensorium_helpers import write_mouse  # noqa: E402

from vivit_hpo.testing import tiny_base  # noqa: E402

WIDTH = 80
runner = CliRunner(env={"COLUMNS": str(WIDTH), "OMP_NUM_THREADS": "1"})

TINY_CNN = {
    "model": {
        "core": {"kind": "cnn", "channels": [4], "blocks_per_stage": 1},
        "modulator": {"hidden_dim": 4},
    },
    "data": {"num_lags": 6, "max_val_bins": 32},
    "train": {"batch_size": 16, "steps_per_epoch": 2, "warmup_epochs": 0},
}
TINY_VIVIT = tiny_base(steps_per_epoch=2)
TINY_VIVIT["train"]["epochs"] = 1
BENCH_ARGS = ["--batch", "3", "--input", "6", "8", "8", "--device", "cpu", "--units", "5"]
BENCH_ARGS += ["--steps", "2", "--warmup", "1", "--threads", "1"]


def render(table: FitTable, width: int) -> str:
    out = Console(file=io.StringIO(), width=width, color_system=None)
    out.print(table)
    return out.file.getvalue()  # type: ignore[attr-defined]


def hidden_headers(output: str) -> set[str]:
    """The headers the captions name as hidden (a caption may wrap over lines)."""
    flat = " ".join(output.split())
    found = re.findall(r"columns? hidden at this width \((.*?)\); widen the terminal", flat)
    return {h for names in found for h in names.split(", ")}


def assert_readable(output: str, headers: Iterable[str] = (), width: int = WIDTH) -> None:
    """No line wider than ``width``, nothing cut short, and each of ``headers`` whole on a line
    (between spaces or the box's lines) or named as hidden."""
    lines = output.splitlines()
    assert max(len(line) for line in lines) <= width, output
    assert "…" not in output, output
    hidden = hidden_headers(output)
    headers = list(headers)
    assert hidden <= set(headers), (hidden, output)
    assert len(hidden) < len(headers) or not headers, output
    for h in headers:
        if h in hidden:
            continue
        whole = re.compile(rf"(?<![^\s┃│]){re.escape(h)}(?![^\s┃│])")
        assert any(whole.search(line) for line in lines), (h, output)


def ok(result: Result) -> str:
    assert result.exit_code == 0, result.output
    return result.output


@pytest.fixture(autouse=True)
def _terminal_of_80_columns(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", str(WIDTH))
    assert console.width == WIDTH  # no width fixed at import overrides the terminal's


# The layer on its own.


def _trials_table() -> FitTable:
    table = FitTable(
        [
            Column("#", "right", priority=9),
            Column("state", priority=8),
            Column("val BPS", "right", priority=7),
            Column("epochs", "right", priority=2),
            Column("params", priority=5, wrap=True),
            Column("reason", priority=1, wrap=True),
        ],
        title="trials",
    )
    table.add_row("0", "COMPLETE", "+0.1234", "3", "lr=0.003 embed_dim=16 heads=2", "budget")
    table.add_row("1", "PRUNED", "-0.0100", "1", "lr=0.01 embed_dim=32 heads=4", "pruned at 1")
    return table


def test_a_table_that_fits_renders_as_the_rich_table_of_the_same_columns() -> None:
    rich_table = Table(title="trials")
    for col, justify in (("#", "right"), ("state", "left"), ("val BPS", "right")):
        rich_table.add_column(col, justify=justify)  # type: ignore[arg-type]
    fit = FitTable(
        [Column("#", "right"), Column("state"), Column("val BPS", "right")], title="trials"
    )
    for row in (("0", "COMPLETE", "+0.1234"), ("12", "PRUNED", "-")):
        rich_table.add_row(*row)
        fit.add_row(*row)
    out = Console(file=io.StringIO(), width=WIDTH, color_system=None)
    out.print(rich_table)
    assert render(fit, WIDTH) == out.file.getvalue()  # type: ignore[attr-defined]


def test_narrow_drops_the_lowest_priority_first_and_says_which() -> None:
    wide = render(_trials_table(), 120)
    assert not hidden_headers(wide) and "lr=0.003 embed_dim=16 heads=2" in wide
    narrow = render(_trials_table(), 44)
    assert hidden_headers(narrow) == {"reason", "epochs"}
    assert "2 columns hidden at this width" in " ".join(narrow.split())
    for width in range(24, 121):
        out = render(_trials_table(), width)
        assert_readable(out, ["#", "state", "val BPS", "epochs", "params", "reason"], width)
        assert not {"#", "state"} & hidden_headers(out), out  # the most important stay


def test_a_text_column_wraps_before_a_column_is_hidden() -> None:
    out = render(_trials_table(), 60)
    assert hidden_headers(out) == {"reason"}
    lines = out.splitlines()
    assert any("lr=0.003" in line and "heads=2" not in line for line in lines), out
    assert any("heads=2" in line and "lr=" not in line for line in lines), out  # wrapped
    assert max(len(line) for line in lines) <= 60


def test_key_value_tables_wrap_the_value() -> None:
    path = "/a/very/long/folder/" * 6 + "trial-0001"
    out = render(key_value_table("best trial", [("trial folder", path)]), 50)
    assert max(len(line) for line in out.splitlines()) <= 50
    assert "".join(re.sub(r"[│ ]", "", line) for line in out.splitlines()).count(path) == 1
    assert "trial folder" in out


def test_number_formatters() -> None:
    assert signed(0.123456) == "+0.1235" and signed(-0.5, 5) == "-0.50000"
    assert fixed(0.12345) == "0.123" and fixed(2.5, 0) == "2"
    assert sig(60.0, 6) == "60" and sig(1.234e9) == "1.23e+09"
    assert percent(0.4242) == "42%" and percent(0.4242, 1) == "42.4%"
    assert seconds(12.4) == "12 s" and count(3000) == "3000"
    assert grouped(1234567) == "1,234,567" and grouped(1234.6) == "1,235"
    assert compact(2.468) == "2.47" and compact(1234.6) == "1,235"
    assert params({"lr": 0.0031234, "embed_dim": 16}) == "lr=0.00312 embed_dim=16"
    for f in (signed, fixed, sig, percent, seconds, grouped, compact):
        assert f(None) == "-" and f(math.nan) == "-"
    assert count(None) == "-"


# Every table of the CLI at 80 columns.


@pytest.fixture(scope="module")
def sessions(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, str, str]]:
    """(a folder of simulated, NWB-imported and Sensorium-imported sessions, the outputs of
    the two imports)."""
    root = tmp_path_factory.mktemp("sessions")
    sim = root / "sim"
    synthesize(sim, sessions=1, neurons=6, frames=900, size=(16, 16), seed=0)
    nwb = session_to_nwb(sim / "sim00.h5", root / "sim00.nwb")
    args = ["data", "import-nwb", str(nwb), "--out", str(sim / "nwb.h5"), "--stimulus", "movie"]
    from_nwb = ok(runner.invoke(app, args))
    tiers = [*["train"] * 5, *["oracle"] * 2, "live_test_main", "live_test_bonus"]
    mouse = write_mouse(root / "dynamic1-2-3-Video-abc", tiers, h=16, w=16, t=60, min_len=50)
    args = ["data", "import-sensorium", str(mouse.folder), "--out", str(sim / "mouse.h5")]
    yield sim, from_nwb, ok(runner.invoke(app, args))


def test_data_tables(sessions: tuple[Path, str, str], tmp_path: Path) -> None:
    folder, from_nwb, from_mouse = sessions
    args = ["data", "synth", str(tmp_path / "s"), "--sessions", "2", "--frames", "900"]
    synth = ok(runner.invoke(app, [*args, "--neurons", "6", "--size", "16", "16"]))
    assert_readable(synth, ["session", "bins", "units", "frame", "sp/s", "train", "val", "test"])
    assert_readable(from_nwb)
    assert_readable(from_mouse)
    inspected = ok(runner.invoke(app, ["data", "inspect", str(folder), "--num-lags", "6"]))
    headers = ["file", "session", "bins", "units", "kind", "frame", "K", "Hz", "rate/s"]
    assert_readable(inspected, [*headers, "blocks", "samples train/val/test", "problems"])
    assert "calcium" in inspected or "kind" in hidden_headers(inspected)


def test_train_and_evaluate_tables(sim_dir: Path, tmp_path: Path) -> None:
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(yaml.safe_dump(TINY_VIVIT))
    run = tmp_path / "run"
    args = ["train", "--data", str(sim_dir), "--model", str(cfg), "--out", str(run)]
    trained = ok(runner.invoke(app, [*args, "--device", "cpu"]))
    assert_readable(trained, ["session", "val BPS", "test BPS", "val / oracle", "test / oracle"])
    args = ["evaluate", str(run), "--data", str(sim_dir), "--out", str(tmp_path / "ev")]
    evaluated = ok(runner.invoke(app, [*args, "--device", "cpu"]))
    assert_readable(evaluated, ["session", "BPS", "oracle", "fraction"])


def test_run_and_study_tables(sim_dir: Path, tmp_path: Path) -> None:
    (tmp_path / "cnn_tiny.yaml").write_text(yaml.safe_dump(TINY_CNN))
    tree = tiny_spec_tree(
        sim_dir,
        tmp_path / "artifacts",
        description="tables at 80 columns, with a description long enough to wrap",
        epochs=2,
        baseline=True,
        baselines=["cnn_tiny.yaml"],
        space={"lr": {"low": 1e-3, "high": 1e-2, "log": True, "to": "train.lr"}},
        sampler={"name": "random", "seed": 0},
        pruner={"name": "none"},
        budget={"n_trials": 2},
    )
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump(tree))
    storage = ["--storage", f"sqlite:///{tmp_path / 'db.sqlite'}"]
    name = "a-study-of-tables"
    ran = ok(runner.invoke(app, ["run", name, "--spec", str(spec), "--workers", "1", *storage]))
    counts = ["running", "complete", "pruned", "infeasible", "failed"]
    workers = ["worker", "device", "pid", "state", "restarts"]
    assert_readable(ran, [*counts, "budget", "best BPS", "trials/h", *workers])

    listed = ok(runner.invoke(app, ["study", "list", *storage]))
    assert_readable(listed, ["name", "trials", *counts, "best", "description"])
    shown = ok(runner.invoke(app, ["study", "show", name, *storage]))
    trials = ["#", "state", "val BPS", "test BPS", "epochs", "best", "time", "params", "reason"]
    standings = ["model", "#", "test BPS", "of oracle", "train time", "parameters"]
    table, beside = shown.split("the best ViViT and the yardsticks")
    assert_readable(table, trials)
    assert_readable(beside, standings)
    best = ok(runner.invoke(app, ["study", "best", name, *storage]))
    assert "trial folder" in best
    assert_readable(best, standings)


def test_bench_tables(sim_dir: Path, tmp_path: Path) -> None:
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(yaml.safe_dump(TINY_VIVIT))
    step = ok(runner.invoke(app, ["bench", "step", "--model", str(cfg), *BENCH_ARGS]))
    headers = ["model", "config", "B", "samples/s", "bins/s", "ms/step", "TFLOP/s"]
    headers += ["% ceiling", "peak MiB", "first step s", "speed ours/ref", "mem ours/ref"]
    assert_readable(step, headers)
    args = ["bench", "clips", "--model", str(cfg), "--data", str(sim_dir), "--device", "cpu"]
    args += ["--clip-frames", "14", "--budget-s", "1", "--epochs", "1"]
    clips = ok(runner.invoke(app, [*args, "--set", "train.batch_size=8"]))
    headers = ["mode", "targets/clip", "clips/s", "bins/s", "train s", "test BPS", "/ oracle"]
    assert_readable(clips, [*headers, "s to windows' final", "test BPS at windows' s", "x windows"])


def test_bench_models_and_chaos_tables() -> None:
    # Their commands run for minutes (tests/bench/test_models.py, tests/search/test_chaos.py):
    # here their tables, from the rows the commands make.
    from vivit_hpo.bench.chaos import SoakResult
    from vivit_hpo.bench.models import ModelRow, models_table
    from vivit_hpo.cli.bench import soak_table

    rows = [
        ModelRow("best ViViT", 0.1234, 0.61, 301.0, 123_456, 12, "trial #7 of 24"),
        ModelRow("cnn_tiny_with_a_long_name", None, None, 300.0, None, 0, "no epoch in time"),
    ]
    headers = ["model", "test BPS", "of oracle", "seconds", "parameters", "epochs", "detail"]
    assert_readable(render(models_table(rows, 5.0), WIDTH), headers)
    soak = SoakResult(minutes=5.0, workers=4, seed=0, rounds=())
    headers = ["studies", "kills", "run restarts", "outages survived", "other faults", "trials"]
    headers += ["trials lost", "checkpoints deleted", "checks"]
    assert_readable(render(soak_table(soak), WIDTH), headers)
