"""The search space: conditional sampling, the mapping onto run configs, feasibility."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
from search_helpers import tiny_spec_tree

from vivit_hpo.config import RunConfig
from vivit_hpo.errors import SpecError
from vivit_hpo.search.space import (
    Infeasible,
    enumerate_space,
    infeasible_reason,
    input_shapes,
    sample_random,
    suggest,
    to_optuna_params,
    to_overrides,
    trial_config,
)
from vivit_hpo.search.spec import DEFAULT_SPACE, ParamSpec, parse_spec

SPACE = {k: ParamSpec.model_validate(v) for k, v in DEFAULT_SPACE.items()}


def test_enumeration_never_gives_a_stride_above_the_patch() -> None:
    combos = list(enumerate_space(SPACE))
    pairs = {(c["patch"], c["stride"]) for c in combos}
    assert pairs == {(2, 2), (4, 2), (4, 4), (8, 2), (8, 4), (8, 8)}
    assert len(combos) == 6 * 3 * 4 * 4 * 3 * 3 * 3  # conditional pairs x other choices


def test_random_sampling_never_gives_a_stride_above_the_patch() -> None:
    for seed in range(500):
        v = sample_random(SPACE, seed)
        assert v["stride"] <= v["patch"]
        assert 1e-4 <= v["lr"] <= 3e-3


@pytest.mark.parametrize("sampler", ["tpe", "random"])
def test_optuna_sampling_never_gives_a_stride_above_the_patch(sampler: str) -> None:
    s = (
        optuna.samplers.TPESampler(seed=0, n_startup_trials=5, group=True, multivariate=True)
        if sampler == "tpe"
        else optuna.samplers.RandomSampler(seed=0)
    )
    study = optuna.create_study(direction="maximize", sampler=s)
    seen = set()
    for _ in range(60):
        trial = study.ask()
        v = suggest(trial, SPACE)
        assert v["stride"] <= v["patch"]
        seen.add((v["patch"], v["stride"]))
        # Each patch value has its own stride parameter with only the allowed choices.
        name = f"stride|patch={v['patch']}"
        if v["patch"] > 2:
            assert trial.params[name] == v["stride"]
            assert max(trial.distributions[name].choices) <= v["patch"]
        else:
            assert not any(k.startswith("stride") for k in trial.params)  # one choice: fixed
        study.tell(trial, -abs(v["lr"] - 1e-3))
    assert len(seen) >= 4


def test_fixed_trial_reproduces_a_configuration() -> None:
    values = {"patch": 8, "stride": 4, "embed_dim": 384, "blocks": 6, "heads": 6}
    values |= {"mlp_ratio": 4, "dropout": 0.1, "lr": 1e-3, "weight_decay": 0.05}
    values |= {"readout_lr_ratio": 10.0, "batch_size": 32}
    fixed = optuna.trial.FixedTrial(to_optuna_params(SPACE, values))
    assert suggest(fixed, SPACE) == values


def test_enqueue_names_need_their_bound() -> None:
    with pytest.raises(SpecError, match="also give patch"):
        to_optuna_params(SPACE, {"stride": 4})
    with pytest.raises(SpecError, match="not a parameter"):
        to_optuna_params(SPACE, {"strides": 4})
    assert to_optuna_params(SPACE, {"patch": 4, "stride": 2}) == {"patch": 4, "stride|patch=4": 2}


def test_values_map_onto_run_config_keys() -> None:
    values = {"patch": 8, "stride": 4, "blocks": 6, "embed_dim": 384, "heads": 6, "lr": 2e-3}
    overrides = to_overrides(SPACE, values)
    assert overrides["model.core.num_spatial_blocks"] == 6
    assert overrides["model.core.num_temporal_blocks"] == 6
    from vivit_hpo.config import RunConfig

    cfg = trial_config(RunConfig().to_dict(), overrides)
    core = cfg.model.core
    assert core.kind == "vivit"
    assert core.kernel_size == (8, 8, 8) and core.stride == (4, 4, 4)  # cube tubelets
    assert core.embed_dim == 384 and core.num_heads == 6 and cfg.train.lr == 2e-3


def test_indexed_target_sets_one_axis() -> None:
    from vivit_hpo.config import RunConfig

    cfg = trial_config(
        RunConfig().to_dict(),
        {
            "model.core.kernel_size": 8,
            "model.core.kernel_size[0]": 2,
            "model.core.stride": 8,
            "model.core.stride[0]": 2,
        },
    )
    assert cfg.model.core.kernel_size == (2, 8, 8) and cfg.model.core.stride == (2, 8, 8)


def test_le_leaving_no_choice_is_infeasible() -> None:
    space = {
        "patch": ParamSpec.model_validate({"choices": [2, 4], "to": "model.core.kernel_size"}),
        "stride": ParamSpec.model_validate(
            {"choices": [4], "le": "patch", "to": "model.core.stride"}
        ),
    }
    fixed = optuna.trial.FixedTrial({"patch": 2})
    with pytest.raises(Infeasible, match="no value <= patch=2"):
        suggest(fixed, space)


def test_when_makes_a_parameter_conditional() -> None:
    space = {
        "modulator": ParamSpec.model_validate(
            {"choices": [True, False], "to": "model.modulator.enabled"}
        ),
        "hidden": ParamSpec.model_validate(
            {"choices": [4, 8], "when": {"modulator": [True]}, "to": "model.modulator.hidden_dim"}
        ),
    }
    combos = list(enumerate_space(space))
    assert {"modulator": False} in combos
    assert {"modulator": True, "hidden": 8} in combos
    assert len(combos) == 3


def test_infeasible_reasons(sim_dir: Path, tmp_path: Path) -> None:
    spec = parse_spec(tiny_spec_tree(sim_dir, tmp_path))
    base = spec.base_tree()
    shapes = input_shapes(spec)
    assert shapes == [(1, 16, 16)]

    def reason(memory: int | None = None, **values: object) -> str | None:
        v = {"patch": 2, "stride": 2, "embed_dim": 16, "heads": 2, "lr": 1e-3, **values}
        return infeasible_reason(spec, base, v, shapes, memory_cap_bytes=memory)

    assert reason() is None
    assert "multiple of 4 for 2D RoPE" in str(reason(embed_dim=24, heads=4))
    assert "shorter than the tubelet" in str(reason(patch=8, stride=8))  # 6 lags
    assert "temporal token" in str(
        infeasible_reason(
            spec,
            base,
            {"patch": 2, "stride": 2, "embed_dim": 16, "heads": 2, "lr": 1e-3},
            shapes,
            memory_cap_bytes=None,
            extra={"model.core.kernel_size": [6, 2, 2], "model.core.stride": [6, 2, 2]},
        )
    )
    # The quick start's shapes: a tubelet of 8 frames on 8 lags is 1 temporal token per window,
    # but a clip of 64 frames gives 8; a tubelet longer than num_lags stays refused.
    quick = {
        "data.num_lags": 8,
        "data.clip_frames": 64,
        "model.core.causal": True,
        "model.core.kernel_size": [8, 4, 4],
        "model.core.stride": [8, 4, 4],
    }
    v = {"patch": 2, "stride": 2, "embed_dim": 16, "heads": 2, "lr": 1e-3}

    def quick_reason(**changes: object) -> str | None:
        extra = {**quick, **changes}
        return infeasible_reason(spec, base, v, [(1, 24, 24)], memory_cap_bytes=None, extra=extra)

    assert quick_reason() is None
    assert "gives 1 temporal token" in str(quick_reason(**{"data.clip_frames": None}))
    long_tubelet = {"model.core.kernel_size": [16, 4, 4]}
    assert "num_lags=8 is shorter than the tubelet" in str(quick_reason(**long_tubelet))
    assert "does not divide" in str(
        infeasible_reason(
            spec,
            base,
            {"patch": 2, "stride": 2, "embed_dim": 16, "heads": 2, "lr": 1e-3},
            shapes,
            memory_cap_bytes=None,
            extra={"model.core.num_heads": 3},
        )
    )
    assert "smaller than the tubelet" in str(
        infeasible_reason(
            spec,
            base,
            {"patch": 2, "stride": 2, "embed_dim": 16, "heads": 2, "lr": 1e-3},
            shapes,
            memory_cap_bytes=None,
            extra={"model.core.kernel_size": [2, 32, 32], "model.core.stride": [2, 32, 32]},
        )
    )
    assert "estimated training memory" in str(reason(memory=1000))


def test_base_values_are_the_base_configs_own_where_the_space_has_them() -> None:
    from vivit_hpo.search.space import base_values

    space = {
        k: ParamSpec.model_validate(v)
        for k, v in {
            "patch": {"choices": [2, 4, 8], "to": "model.core.kernel_size"},
            "stride": {"choices": [2, 4, 8], "le": "patch", "to": "model.core.stride"},
            "frames": {"choices": [2, 4], "to": "model.core.kernel_size[0]"},
            "mlp": {"choices": [2, 4, 8], "to": "model.core.mlp_ratio"},
            "blocks": {
                "choices": [1, 2],
                "to": ["model.core.num_spatial_blocks", "model.core.num_temporal_blocks"],
            },
            "dim": {"choices": [16, 32], "to": "model.core.embed_dim"},  # base 192: not a choice
            "lr": {"low": 1e-4, "high": 1e-2, "log": True, "to": "train.lr"},
            "wd": {"low": 0.1, "high": 0.2, "to": "train.weight_decay"},  # base 0.05: outside
        }.items()
    }
    base = RunConfig.model_validate(
        {
            "model": {
                "core": {"kernel_size": [4, 4, 4], "stride": [4, 4, 4], "mlp_ratio": 4.0},
            },
            "train": {"lr": 3e-4},
        }
    ).to_dict()
    base["model"]["core"]["num_spatial_blocks"] = 2
    base["model"]["core"]["num_temporal_blocks"] = 1  # the two keys disagree: left out
    got = base_values(space, base)
    assert got == {"patch": 4, "stride": 4, "frames": 4, "mlp": 4, "lr": 3e-4}
    assert isinstance(got["mlp"], int)  # the choice itself, not the config's 4.0
    # A base patch that is not a choice: patch is drawn, and so is the stride it bounds.
    base["model"]["core"]["kernel_size"] = [3, 3, 3]
    assert "patch" not in base_values(space, base) and "stride" not in base_values(space, base)
