"""The training-step benchmark on the CPU: CLI, JSON report, reference side by side, FLOPs.

No test asserts a time: the machines are shared and noisy. They assert that the bench runs the
real training step, reports finite positive figures under the documented keys, and maps errors
to exit code 2.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from typer.testing import CliRunner

from vivit_hpo.bench import (
    BACKENDS,
    PeakMemory,
    attention_override,
    default_reference_path,
    load_reference,
    matmul_ceiling,
    reference_kwargs,
    synthetic_session,
    time_steps,
)
from vivit_hpo.bench.command import Backend
from vivit_hpo.bench.modes import time_to_reach, value_at
from vivit_hpo.bench.summary import load_reports, markdown, summary_rows
from vivit_hpo.cli import app
from vivit_hpo.config import load_run_config
from vivit_hpo.errors import ConfigError
from vivit_hpo.models import build_model, flops_per_sample
from vivit_hpo.testing import tiny_base

ROOT = Path(__file__).resolve().parents[2]
# The suite's tiny ViViT (D=16, 2 heads, 1+1 blocks, 2x4x4 tubelets, 1 register) and its
# modulator, as the service tests train it.
TINY_MODEL = tiny_base()["model"]
TINY_CORE = TINY_MODEL["core"]
TINY_ARGS = ["--batch", "3", "--input", "6", "8", "8", "--device", "cpu", "--units", "5"]
TINY_ARGS += ["--steps", "2", "--warmup", "1", "--threads", "1"]
METRICS = (
    "samples_per_s",
    "bins_per_s",
    "ms_per_step",
    "median_ms_per_step",
    "tflops",
    "pct_of_ceiling",
    "flops_per_sample",
    "peak_memory_mb",
    "first_step_s",
    "warmup_s",
)
REFERENCE = default_reference_path()
needs_reference = pytest.mark.skipif(
    not REFERENCE.is_file(), reason=f"reference benchmark not found at {REFERENCE}"
)


@pytest.fixture(scope="module")
def tiny_yaml(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("cfg") / "tiny.yaml"
    cfg = {"model": TINY_MODEL, "train": {"lr": 1e-3}}
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.fixture(scope="module")
def ref_report(tiny_yaml: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """One bench run with the reference beside ours: (its JSON report, the printed output)."""
    if not REFERENCE.is_file():
        pytest.skip(f"reference benchmark not found at {REFERENCE}")
    out = tmp_path_factory.mktemp("ref") / "ref.json"
    args = [
        "bench",
        "step",
        "--model",
        str(tiny_yaml),
        *TINY_ARGS,
        "--reference",
        "--json",
        str(out),
    ]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    return out, result.output


def _check_metrics(m: dict, batch: int) -> None:
    for key in METRICS:
        assert isinstance(m[key], float), key
        assert math.isfinite(m[key]) and m[key] > 0, (key, m[key])
    assert m["batch_size"] == batch
    assert len(m["step_ms"]) == 2
    assert m["loss_finite"] and math.isfinite(m["loss"])
    # samples/s and TFLOP/s follow from the mean step time and the FLOPs count.
    assert m["samples_per_s"] == pytest.approx(batch / (m["ms_per_step"] / 1e3))
    expected_tflops = m["flops_per_sample"] * batch / (m["ms_per_step"] / 1e3) / 1e12
    assert m["tflops"] == pytest.approx(expected_tflops)


def test_bench_cli_writes_a_report(tiny_yaml: Path, tmp_path: Path) -> None:
    out = tmp_path / "r" / "bench.json"
    result = CliRunner().invoke(
        app, ["bench", "step", "--model", str(tiny_yaml), *TINY_ARGS, "--json", str(out)]
    )
    assert result.exit_code == 0, result.output
    assert "samples/s" in result.output and "fp32 matmul" in result.output
    report = json.loads(out.read_text())
    assert report["schema"] == "vivit-hpo-bench/1"
    assert report["settings"]["input_size"] == [6, 8, 8]
    assert report["settings"]["compile"] is False
    ceiling = report["ceiling"]
    assert ceiling["dtype"] == "float32" and ceiling["tflops"] > 0
    assert report["environment"]["device"] == "cpu"
    assert report["environment"]["cpu_threads"] == 1  # --threads 1
    (row,) = report["results"]
    assert row["reference"] is None and row["ratio"] is None
    ours = row["ours"]
    _check_metrics(ours, batch=3)
    cfg = load_run_config(tiny_yaml)
    assert ours["flops_per_sample"] == flops_per_sample(cfg.model, (1, 6, 8, 8))
    # The Trainer's own pieces ran: its AdamW (not fused on the CPU), no autocast, the
    # modulator (behaviour present) and the data path of the synthetic session.
    assert ours["fused_adamw"] is False and ours["amp"] == "off"
    assert ours["modulator"] is True and ours["data_device"] == "cpu"
    assert ours["token_grid"] == [3, 2, 2]
    assert ours["gather_ms"] > 0
    assert ours["memory_kind"].startswith("process_peak_rss")


def test_bench_two_configs_and_backend_override(tiny_yaml: Path, tmp_path: Path) -> None:
    before = os.environ.get("VIVIT_HPO_ATTENTION")
    out = tmp_path / "two.json"
    args = ["bench", "step", "--model", str(tiny_yaml), "--model", str(tiny_yaml), *TINY_ARGS]
    args += ["--backend", "math", "--behavior", "0", "--json", str(out)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    assert len(report["results"]) == 2
    for row in report["results"]:
        assert row["ours"]["attention_backend"] == "math"
        assert row["ours"]["modulator"] is False  # no behaviour: no modulator built
    assert os.environ.get("VIVIT_HPO_ATTENTION") == before  # the override ends with the run


def test_bench_user_errors_exit_2(tiny_yaml: Path) -> None:
    runner = CliRunner()
    flash = runner.invoke(
        app, ["bench", "step", "--model", str(tiny_yaml), *TINY_ARGS, "--backend", "flash-attn"]
    )
    assert flash.exit_code == 2
    assert "flash-attn" in flash.output
    small = TINY_ARGS.copy()
    small[small.index("--input") + 1 : small.index("--input") + 4] = ["1", "8", "8"]
    short = runner.invoke(app, ["bench", "step", "--model", str(tiny_yaml), *small])
    assert short.exit_code == 2
    assert "--input 1 8 8" in short.output
    missing = runner.invoke(
        app,
        [
            *["bench", "step", "--model", str(tiny_yaml), *TINY_ARGS, "--reference"],
            *["--reference-path", str(tiny_yaml.parent / "nope.py")],
        ],
    )
    assert missing.exit_code == 2
    assert "nope.py" in missing.output and "--reference-path" in missing.output


def test_bench_reference_side_by_side(ref_report: tuple[Path, str]) -> None:
    out, printed = ref_report
    assert "speed ours/ref" in printed
    (row,) = json.loads(out.read_text())["results"]
    _check_metrics(row["ours"], batch=3)
    _check_metrics(row["reference"], batch=3)
    ref = row["reference"]
    # d 16 is not a multiple of the reference's head size 64: it keeps our head count.
    assert ref["kwargs"] == {
        "d": 16,
        "heads": 2,
        "ns": 1,
        "nt": 1,
        "k": [2, 4, 4],
        "in_ch": 1,
        "n_neurons": 5,
        "registers": 1,
    }
    assert ref["token_grid"] == [3, 2, 2]
    for key in ("samples_per_s", "tflops", "peak_memory"):
        assert math.isfinite(row["ratio"][key]) and row["ratio"][key] > 0
    assert row["ratio"]["samples_per_s"] == pytest.approx(
        row["ours"]["samples_per_s"] / ref["samples_per_s"]
    )
    assert ref["attention_backend"] == "sdpa" and row["ours"]["attention_backend"] == "sdpa"


def test_summary_pairs_compiled_rows_with_the_eager_reference(
    ref_report: tuple[Path, str], tmp_path: Path
) -> None:
    eager = json.loads(ref_report[0].read_text())
    # A compiled run of the same config, input and batch, timed without the reference (as the
    # GPU script's compiled stages are): its ratio is taken against the eager reference.
    compiled = json.loads(json.dumps(eager))
    compiled["settings"]["compile"] = True
    compiled["results"][0]["reference"] = compiled["results"][0]["ratio"] = None
    compiled["results"][0]["ours"]["samples_per_s"] *= 2
    folder = tmp_path / "reports"
    folder.mkdir()
    (folder / "a_eager.json").write_text(json.dumps(eager))
    (folder / "b_compiled.json").write_text(json.dumps(compiled))
    (folder / "notes.json").write_text(json.dumps({"other": 1}))  # not a report: ignored
    reports = load_reports([folder])
    assert [r["source"] for r in reports] == ["a_eager.json", "b_compiled.json"]
    rows = summary_rows(reports)
    ref_sps = eager["results"][0]["reference"]["samples_per_s"]
    ours_sps = eager["results"][0]["ours"]["samples_per_s"]
    assert [r["mode"] for r in rows] == ["eager", "compiled"]
    assert rows[0]["ratio_vs_ref_same_mode"] == pytest.approx(ours_sps / ref_sps)
    assert rows[1]["ratio_vs_ref_same_mode"] is None
    assert rows[1]["ratio_vs_ref_eager"] == pytest.approx(2 * ours_sps / ref_sps)
    table = markdown(reports)
    assert table.count("\n| tiny |") == 2 and "(3, 1, 6, 8, 8)" in table
    assert "fp32 matmul 1024^3 (CPU)" in table


@needs_reference
def test_load_reference_binds_its_device_and_restores_globals() -> None:
    before = os.environ.get("DEV")
    tf32 = torch.backends.cuda.matmul.allow_tf32
    module = load_reference(REFERENCE, torch.device("cpu"))
    assert module.dev == "cpu"
    assert os.environ.get("DEV") == before
    assert torch.backends.cuda.matmul.allow_tf32 == tf32
    with pytest.raises(ConfigError, match="not found"):
        load_reference(REFERENCE.parent / "missing.py", torch.device("cpu"))


def test_reference_kwargs_map_the_shipped_configs_onto_the_reference_rows() -> None:
    small = load_run_config(ROOT / "configs" / "vivit_small.yaml").model.core
    base = load_run_config(ROOT / "configs" / "vivit_baseline.yaml").model.core
    assert small.kind == "vivit" and base.kind == "vivit"
    got_small = reference_kwargs(small, channels=1, num_units=256)
    got_base = reference_kwargs(base, channels=1, num_units=256)
    # performance.md: small = D 192, 3 heads, 4+4 blocks; baseline = D 384, 6 heads, 6+6.
    assert (got_small["d"], got_small["heads"], got_small["ns"], got_small["nt"]) == (192, 3, 4, 4)
    assert (got_base["d"], got_base["heads"], got_base["ns"], got_base["nt"]) == (384, 6, 6, 6)
    assert got_small["k"] == (4, 4, 4) and got_small["registers"] == 4
    overlapping = small.model_copy(update={"stride": (2, 4, 4)})
    with pytest.raises(ConfigError, match="non-overlapping"):
        reference_kwargs(overlapping, channels=1, num_units=8)


def test_flops_per_sample_matches_a_hand_count() -> None:
    cfg = load_run_config(None, [f"model.core={json.dumps(TINY_CORE)}"]).model
    # Input (C, L, H, W) = (1, 6, 8, 8), tubelet 2x4x4: grid T 3, 2x2 = S 4 patches, R 1.
    d, t, s, r = 16, 3, 4, 1
    hidden = 48  # SwiGLU: 2/3 of 4 * 16, rounded up to a multiple of 8
    tokenizer = 2 * (1 * 2 * 4 * 4) * d * (t * s)  # one multiply-add per weight per token
    per_token = 2 * d * (3 * d + 2 * hidden) + 2 * (d + hidden) * d  # in_proj, out_proj
    spatial = t * ((s + r) * per_token + 4 * (s + r) ** 2 * d)  # B*T sequences of R + S
    temporal = s * (t * per_token + 4 * t**2 * d)  # B*S sequences of T
    assert tokenizer == 12288 and per_token == 6656
    assert flops_per_sample(cfg, (1, 6, 8, 8)) == 3 * (tokenizer + spatial + temporal) == 597312


def test_flops_per_sample_matches_torch_flop_counter(monkeypatch: pytest.MonkeyPatch) -> None:
    from torch.utils.flop_counter import FlopCounterMode

    from vivit_hpo.data import SessionMeta

    # The math attention path is plain matmuls, which the flop counter counts exactly.
    monkeypatch.setenv("VIVIT_HPO_ATTENTION", "math")
    core = dict(TINY_CORE, embed_dim=32, num_heads=4, num_registers=2, mlp="gelu")
    cfg = load_run_config(None, [f"model.core={json.dumps(core)}"]).model
    meta = SessionMeta("s", 4, 1, 12, 20, 0, 60.0, (0.1,) * 4)
    model = build_model(cfg, [meta], 7)  # 7 lags: the tokenizer pads one frame
    batch = 2
    x = torch.randn(batch, 1, 7, 12, 20)
    with FlopCounterMode(display=False) as counter:
        model.core(x)
    assert 3 * counter.get_total_flops() / batch == flops_per_sample(cfg, (1, 7, 12, 20))


def test_backend_choices_and_override(monkeypatch: pytest.MonkeyPatch) -> None:
    assert tuple(b.value for b in Backend) == BACKENDS
    monkeypatch.setenv("VIVIT_HPO_ATTENTION", "math")
    with attention_override("sdpa-cudnn"):
        assert os.environ["VIVIT_HPO_ATTENTION"] == "sdpa"  # a pinned kernel of the sdpa path
    assert os.environ["VIVIT_HPO_ATTENTION"] == "math"
    with attention_override(None):
        assert os.environ["VIVIT_HPO_ATTENTION"] == "math"  # no --backend: the env decides


def test_sdpa_pin_runs_both_models(tiny_yaml: Path, tmp_path: Path) -> None:
    # On the CPU, PyTorch's flash kernel is the one fused SDPA kernel there is.
    out = tmp_path / "pin.json"
    args = ["bench", "step", "--model", str(tiny_yaml), *TINY_ARGS, "--backend", "sdpa-flash"]
    if REFERENCE.is_file():
        args.append("--reference")
    result = CliRunner().invoke(app, [*args, "--json", str(out)])
    assert result.exit_code == 0, result.output
    (row,) = json.loads(out.read_text())["results"]
    assert row["ours"]["attention_backend"] == "sdpa-flash"
    if row["reference"] is not None:
        assert row["reference"]["attention_backend"] == "sdpa-flash"


def test_synthetic_session_holds_the_requested_samples() -> None:
    s = synthetic_session(num_units=7, num_behavior=3, size=(5, 9, 11), num_train=12)
    n = (5 - 1 + 12) + (5 - 1 + 8)
    assert s.frames.shape == (n, 1, 9, 11) and s.frames.dtype == torch.uint8
    assert s.robs.shape == (n, 7) and s.behavior is not None and s.behavior.shape == (n, 3)
    # A training segment with 12 whole 5-frame clips, then a validation one with 8.
    assert s.split_segments("train").tolist() == [[0, 16]]
    assert s.split_segments("val").tolist() == [[16, 28]]
    assert s.num_samples("train", 5) == 12 and s.num_samples("val", 5) == 8
    assert s.sample_bins("train", 5)[0] == 4  # the first bin with a full 5-frame history
    assert s.meta.num_behavior == 3 and len(s.meta.mean_rates) == 7


def test_time_steps_counts_every_step_and_rejects_empty_windows() -> None:
    calls: list[int] = []
    timing = time_steps(calls.append, steps=4, warmup=2, device=torch.device("cpu"))
    assert calls == [0, 1, 2, 3, 4, 5]
    assert len(timing.step_ms) == 4 and all(ms >= 0 for ms in timing.step_ms)
    assert timing.warmup_s >= timing.first_step_s >= 0
    with pytest.raises(ValueError, match="steps=0"):
        time_steps(calls.append, steps=0, warmup=1, device=torch.device("cpu"))


def test_cpu_ceiling_is_a_labelled_fp32_figure() -> None:
    c = matmul_ceiling(torch.device("cpu"), size=256, repeats=3)
    assert c.dtype == "float32" and c.size == 256
    assert "fp32" in c.label and "CPU" in c.label
    assert math.isfinite(c.tflops) and c.tflops > 0


def test_peak_memory_sees_an_allocation_after_reset() -> None:
    memory = PeakMemory(torch.device("cpu"))
    memory.reset()
    base = memory.peak_mb()
    block = torch.ones(64 * 2**20 // 4)  # 64 MiB, touched
    grown = memory.peak_mb()
    del block
    assert grown - base >= 48 or memory.kind == "process_peak_rss_since_start"


def test_bench_runs_without_the_search_stack(tiny_yaml: Path, tmp_path: Path) -> None:
    """``python -m vivit_hpo.bench`` (the GPU machine's entry) imports no Optuna/SQLAlchemy."""
    out = tmp_path / "sub.json"
    code = (
        "import sys, runpy; sys.argv = ['vivit_hpo.bench'] + sys.argv[1:]\n"
        "try:\n    runpy.run_module('vivit_hpo.bench', run_name='__main__')\n"
        "except SystemExit as e:\n    assert not e.code, e.code\n"
        "heavy = [m for m in ('optuna', 'sqlalchemy', 'psycopg2', 'plotly') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    args = ["step", "--model", str(tiny_yaml), *TINY_ARGS, "--json", str(out)]
    proc = subprocess.run(
        [sys.executable, "-c", code, *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert json.loads(out.read_text())["results"][0]["ours"]["samples_per_s"] > 0


def test_vivit_hpo_bench_subprocess(tiny_yaml: Path, tmp_path: Path) -> None:
    out = tmp_path / "cli.json"
    proc = subprocess.run(
        [
            *[sys.executable, "-m", "vivit_hpo", "bench", "step", "--model", str(tiny_yaml)],
            *[*TINY_ARGS, "--json", str(out)],
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "samples/s" in proc.stdout
    (row,) = json.loads(out.read_text())["results"]
    assert row["ours"]["samples_per_s"] > 0 and row["reference"] is None


def test_time_to_reach_interpolates_between_checkpoints() -> None:
    assert time_to_reach([10, 20, 30], [0.1, 0.3, 0.5], 0.2) == pytest.approx(15.0)
    assert time_to_reach([10, 20, 30], [0.1, 0.3, 0.5], 0.05) == 10  # at the first checkpoint
    assert time_to_reach([10, 20, 30], [0.1, 0.3, 0.5], 0.5) == 30
    assert time_to_reach([10, 20], [0.1, 0.3], 0.31) is None
    assert value_at([10, 20, 30], [0.1, 0.3, 0.5], 25) == pytest.approx(0.4)
    assert value_at([10, 20, 30], [0.1, 0.3, 0.5], 45) == 0.5  # the last value past the end
    assert value_at([10, 20, 30], [0.1, 0.3, 0.5], 5) is None
    # At the last checkpoint the value is the checkpoint's own, not an interpolation one ulp off.
    assert value_at([0.7, 2.9], [0.1, -0.09116337306369453], 2.9) == -0.09116337306369453


def test_bench_clips_trains_both_modes_for_the_same_budget(
    sim_dir: Path, tiny_yaml: Path, tmp_path: Path
) -> None:
    out = tmp_path / "clips.json"
    args = ["bench", "clips", "--model", str(tiny_yaml), "--data", str(sim_dir)]
    args += ["--clip-frames", "14", "--budget-s", "2", "--epochs", "2", "--device", "cpu"]
    args += ["--set", "data.num_lags=6", "--set", "train.batch_size=8"]
    args += ["--set", "data.max_val_bins=80"]
    result = CliRunner().invoke(app, [*args, "--json", str(out)])
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    windows, clips = report["results"]
    assert (windows["mode"], windows["targets_per_clip"]) == ("windows", 1)
    assert clips["clip_frames"] == 14 and clips["targets_per_clip"] > 1
    for r in (windows, clips):
        assert len(r["test_bps"]) == len(r["train_seconds"]) == 2
        assert r["bins_per_s"] >= r["samples_per_s"] * (1 - 1e-9) > 0
        assert r["oracle_test_bps"] is not None  # simulated data: the oracle is known
    assert clips["bins_per_s"] / clips["samples_per_s"] > 1.5  # several targets per clip
    # The window mode reaches its own final value by its last checkpoint at the latest.
    assert windows["seconds_to_window_final"] <= windows["train_seconds"][-1] + 1e-9
    assert "s to windows' final" in result.output
    assert windows["test_bps_at_window_time"] == windows["final_test_bps"]
