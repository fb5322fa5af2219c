"""Model options on and off at equal wall time: test BPS of each variant of one run config.

    python benchmarks/model_options.py --data sim/ --model configs/vivit_cpu.yaml \
        --seconds 240 --jobs 2 --json out.json \
        --variant base= --variant qk_norm=model.core.qk_norm=true \
        --variant "stem=model.core.stem_channels=[16];model.core.stem_kernel=[8,5,5]"

Each variant is the config with its ``--set`` overrides (``;``-separated) applied, trained by
the project's Trainer for ``--seconds`` of wall time (its schedule sized to the time, as
``vivit-hpo bench models`` sizes a yardstick's: :func:`vivit_hpo.bench.models.train_for`), its
best epoch scored on the test split. ``--jobs`` variants run at once, one torch thread each, so
variants that run side by side share the machine alike; the table gives the test BPS, the
fraction of the oracle where the data are simulated, epochs and parameters.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import Any

from vivit_hpo.config import apply_overrides, parse_run_config, read_yaml


def _one_thread() -> None:
    import torch

    torch.set_num_threads(1)


def _train(
    name: str, tree: dict[str, Any], data: Path, seconds: float, epochs: int
) -> dict[str, Any]:
    from vivit_hpo.bench.models import train_for

    with tempfile.TemporaryDirectory(prefix=f"options-{name}-") as run_dir:
        out = train_for(
            tree, [data], seconds=seconds, epochs=epochs, device="cpu", run_dir=Path(run_dir)
        )
    return {"variant": name, **out}


def _oracle(data: Path, tree: dict[str, Any]) -> float | None:
    from vivit_hpo.data.simulate import oracle_split_mean

    return oracle_split_mean([data], cfg=parse_run_config(tree).data)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--data", type=Path, required=True, help="folder of session files")
    p.add_argument("--model", type=Path, required=True, help="the base run config (YAML)")
    p.add_argument("--variant", action="append", required=True, help="NAME=key=val;key=val")
    p.add_argument("--seconds", type=float, default=240.0, help="wall time of each variant")
    p.add_argument("--epochs", type=int, default=16, help="epochs the time is cut into")
    p.add_argument("--jobs", type=int, default=2, help="variants trained at once")
    p.add_argument("--json", type=Path, help="write the rows here")
    args = p.parse_args()

    base = read_yaml(args.model)
    trees: dict[str, dict[str, Any]] = {}
    for item in args.variant:
        name, _, sets = item.partition("=")
        overrides = [s for s in sets.split(";") if s]
        trees[name] = apply_overrides(base, overrides)
        parse_run_config(trees[name], f"variant {name}")  # refuse a bad one before any training
    with ProcessPoolExecutor(
        args.jobs, mp_context=get_context("spawn"), initializer=_one_thread
    ) as pool:
        futures = [
            pool.submit(_train, name, tree, args.data, args.seconds, args.epochs)
            for name, tree in trees.items()
        ]
        rows = [f.result() for f in futures]
    print(f"| variant | test BPS | of oracle | epochs | parameters |  ({args.seconds:g} s each)")
    print("| --- | ---: | ---: | ---: | ---: |")
    for row in rows:
        oracle = _oracle(args.data, trees[row["variant"]])
        row["oracle_test_bps"] = oracle
        bps = row["test_bps"]
        frac = f"{bps / oracle:.0%}" if bps is not None and oracle else "-"
        shown = "-" if bps is None else f"{bps:+.4f}"
        print(f"| {row['variant']} | {shown} | {frac} | {row['epochs']} | {row['params']:,} |")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
