"""The run config's override grammar (``--set``): one grammar for ``train --set``, a spec's
``base.overrides``, ``study enqueue --set`` and the space's ``to:`` keys."""

from __future__ import annotations

import pytest

from vivit_hpo.config import RunConfig, apply_overrides, load_run_config, parse_override, set_key
from vivit_hpo.errors import ConfigError
from vivit_hpo.search.space import trial_config


@pytest.mark.parametrize(
    ("item", "want"),
    [
        ("train.lr=1e-3", 1e-3),  # YAML 1.2's number, not PyYAML's string '1e-3'
        ("train.lr=-2E+4", -2e4),
        ("train.lr=0.5", 0.5),
        ("train.batch_size=8", 8),
        ("model.core.kernel_size=[2, 4, 4]", [2, 4, 4]),
        ("model.core={kind: cnn}", {"kind": "cnn"}),
        ("train.clip_grad_norm=null", None),
        ("model.core.causal=false", False),
        ("model.core.kind=vivit", "vivit"),
    ],
)
def test_values_are_yaml_with_yaml12_numbers(item: str, want: object) -> None:
    key, value = parse_override(item)
    assert key == item.partition("=")[0] and value == want
    assert type(value) is type(want)


def test_a_scalar_fills_every_axis_and_an_index_sets_one() -> None:
    # On a tree that leaves the keys out (a user's YAML): the default tuples are written into.
    cfg = load_run_config(
        None,
        [
            "model.core.kernel_size=8",
            "model.core.kernel_size[0]=2",
            "model.core.stride=2",
            "train.betas=0.9",
        ],
    )
    assert cfg.model.core.kernel_size == (2, 8, 8)
    assert cfg.model.core.stride == (2, 2, 2)
    assert cfg.train.betas == (0.9, 0.9)
    # The core kind decides the defaults: a CNN's channels (3 stages) are filled.
    cnn = load_run_config(None, ["model.core.kind=cnn", "model.core.channels=16"])
    assert cnn.model.core.channels == (16, 16, 16)


@pytest.mark.parametrize(
    "item",
    [
        "train.lr=1e-3",
        "train.betas=0.8",
        "model.core.kernel_size=2",
        "model.core.kernel_size[0]=2",
        "model.core.stride[2]=2",
        "model.core.stem_channels=[8, 8]",
        "model.core={kind: cnn, channels: [8]}",
        "data.stream=off",
    ],
)
def test_a_partial_and_a_full_tree_take_an_override_alike(item: str) -> None:
    # train --set writes into the user's partial YAML, the space and `study enqueue` into the
    # study's full base tree: the same string gives the same config.
    base = ["model.core.kernel_size=[4, 4, 4]", "model.core.stride=[2, 2, 2]"]
    via_train = load_run_config(None, [*base, item]).to_dict()
    full = load_run_config(None, base).to_dict()
    via_study = trial_config(full, {}, dict([parse_override(item)])).to_dict()
    assert via_train == via_study


@pytest.mark.parametrize(
    ("item", "says"),
    [
        ("train.lr", "expected key=value"),
        ("=1", "expected key=value"),
        ("train..lr=1", "not a key"),
        ("train.lr[x]=1", "not a key"),
        ("train.lr=[1", "not valid YAML"),
        ("train.lr.x=1", "'lr' is not a section"),
        ("train.lr[0]=1", "train.lr is not a tuple of axes"),
        ("model.core.kernel_size[3]=1", "has 3 axes; use an index below 3"),
    ],
)
def test_a_bad_override_is_one_line_naming_it(item: str, says: str) -> None:
    with pytest.raises(ConfigError) as err:
        apply_overrides({"train": {"lr": 1.0}}, [item])
    msg = str(err.value)
    assert says in msg and "\n" not in msg and msg.startswith("--set ")


def test_set_key_writes_in_place_and_keeps_other_keys() -> None:
    tree = RunConfig().to_dict()
    set_key(tree, "model.core.kernel_size[0]", 2)
    set_key(tree, "train.lr", 0.01)
    assert tree["model"]["core"]["kernel_size"] == [2, 4, 4]
    assert tree["train"]["lr"] == 0.01 and tree["train"]["batch_size"] == 32
