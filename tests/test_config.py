"""TrainConfig: YAML + key=value overrides, typed, with one-line errors naming the field."""

import pytest

from fgdsr.config import CONFIG_DIR, TrainConfig, apply_overrides, load_config, parse_set_args
from fgdsr.errors import UserError


def test_shipped_configs_load():
    # space.yaml (search space) and demo.yaml (pipeline) are not TrainConfigs
    for name in ("tiny", "lapsrn", "paper", "tune-demo"):
        cfg = load_config(CONFIG_DIR / f"{name}.yaml")
        assert isinstance(cfg, TrainConfig), name


def test_overrides_are_typed():
    cfg = apply_overrides(TrainConfig(), parse_set_args(["lr=2e-4", "loss=fd", "areas=[3,5]", "depth=none"]))
    assert cfg.lr == pytest.approx(2e-4) and cfg.loss == "fd" and cfg.areas == [3, 5] and cfg.depth is None
    cfg = apply_overrides(cfg, {"weight_norm": "true", "max_steps": "30", "areas": "7,9"})
    assert cfg.weight_norm is True and cfg.max_steps == 30 and cfg.areas == [7, 9]


@pytest.mark.parametrize(
    "changes, field",
    [
        ({"nope": 1}, "nope"),
        ({"lr": "fast"}, "lr"),
        ({"loss": "l2"}, "loss"),
        ({"scale": 5}, "scale"),
        ({"areas": [4]}, "areas"),
        ({"weight_norm": "maybe"}, "weight_norm"),
        ({"max_steps": 1.5}, "max_steps"),
        ({"patch_size": 30}, "patch_size"),
    ],
)
def test_bad_fields_name_the_field(changes, field):
    with pytest.raises(UserError, match=field):
        apply_overrides(TrainConfig(), changes)


def test_set_syntax_and_bad_yaml(tmp_path):
    with pytest.raises(UserError, match="key=value"):
        parse_set_args(["lr"])
    bad = tmp_path / "bad.yaml"
    bad.write_text("lr: [1, 2\n")
    with pytest.raises(UserError, match="bad.yaml"):
        load_config(bad)
    with pytest.raises(UserError, match="not found"):
        load_config(tmp_path / "missing.yaml")


def test_every_numeric_field_has_a_range():
    """A new int/float field must get an entry in RANGES (the table the range checks read)."""
    import dataclasses
    import typing

    from fgdsr.config import RANGES

    hints = typing.get_type_hints(TrainConfig)
    numeric = []
    for f in dataclasses.fields(TrainConfig):
        hint = hints[f.name]
        if typing.get_origin(hint) is list:  # areas: odd bin counts, checked in validate()
            continue
        args = set(typing.get_args(hint)) - {type(None)} or {hint}
        if args & {int, float}:
            numeric.append(f.name)
    assert "lr" in numeric and "ema_decay" in numeric and "weight_norm" not in numeric
    assert sorted(set(numeric) - set(RANGES)) == []
    assert sorted(set(RANGES) - set(numeric)) == []


@pytest.mark.parametrize(
    "field, bad, allowed",
    [
        ("lr", -0.1, "> 0"),
        ("lr", 0, "> 0"),
        ("lr", "nan", "> 0"),
        ("lr_gamma", 1.5, "(0, 1]"),
        ("weight_decay", -1e-4, ">= 0"),
        ("alpha", -1, ">= 0"),
        ("beta", "-inf", ">= 0"),
        ("workers", -2, ">= 0"),
        ("batch_size", 0, ">= 1"),
        ("depth", 0, ">= 1"),
        ("val_max_images", 0, ">= 1"),
        ("seed", -1, "[0, 4294967295]"),
        ("seed", 2**32, "[0, 4294967295]"),
        ("ema_decay", 1.0, "[0, 1)"),
        ("ema_start", -5, ">= 0"),
        ("bins", 1, ">= 2"),
    ],
)
def test_out_of_range_is_one_line_naming_field_and_range(field, bad, allowed):
    with pytest.raises(UserError) as e:
        apply_overrides(TrainConfig(), {field: bad})
    msg = str(e.value)
    assert f"'{field}'" in msg and f"allowed: {allowed})" in msg and "\n" not in msg, msg


def test_range_bounds_are_inclusive_where_stated():
    cfg = apply_overrides(
        TrainConfig(), {"lr_gamma": 1.0, "ema_decay": 0.0, "workers": 0, "seed": 2**32 - 1, "alpha": 0}
    )
    assert cfg.lr_gamma == 1.0 and cfg.seed == 2**32 - 1
    assert apply_overrides(TrainConfig(), {"depth": None}).depth is None  # optional fields may be None


def test_old_mixed_precision_is_mapped_in_stored_configs():
    """config.json of checkpoints written before `precision` existed: mixed_precision no|bf16|fp16."""
    from fgdsr.config import config_from_dict

    old = TrainConfig().to_dict()
    del old["precision"]
    for value, new in (("no", "fp32"), ("bf16", "bf16"), ("fp16", "fp16")):
        assert config_from_dict({**old, "mixed_precision": value}, "ckpt/config.json").precision == new
    with pytest.raises(UserError, match="ckpt/config.json"):
        config_from_dict({**old, "mixed_precision": "fp8"}, "ckpt/config.json")
    with pytest.raises(UserError, match="keep only 'precision'"):
        config_from_dict({**old, "mixed_precision": "no", "precision": "auto"}, "ckpt/config.json")
    # in a YAML or --set the old name is a one-line hint, not silently accepted
    with pytest.raises(UserError, match="'mixed_precision' is now 'precision'"):
        apply_overrides(TrainConfig(), {"mixed_precision": "bf16"})


def test_training_block_choices():
    cfg = apply_overrides(
        TrainConfig(), parse_set_args(["compile=true", "pyramid_on=device", "augment=flip"])
    )
    assert cfg.compile is True and cfg.pyramid_on == "device" and cfg.augment == "flip"
    assert TrainConfig().precision == "auto" and TrainConfig().augment == "dihedral"
    for field in ("precision", "pyramid_on", "augment"):
        with pytest.raises(UserError, match=field):
            apply_overrides(TrainConfig(), {field: "nope"})


def test_cli_train_config_with_negative_lr_is_one_line(tmp_path):
    """Issue 15's row: `fgdsr train --config X` with lr: -0.1 was torch's ValueError traceback, exit 1."""
    from typer.testing import CliRunner

    from orchestrator.cli import app

    cfg = tmp_path / "x.yaml"
    cfg.write_text((CONFIG_DIR / "tiny.yaml").read_text() + "lr: -0.1\n")
    r = CliRunner().invoke(app, ["train", "--config", str(cfg), "--out", str(tmp_path / "run")])
    lines = [ln for ln in r.output.splitlines() if ln.strip()]
    assert r.exit_code == 2 and len(lines) == 1, r.output
    assert "'lr'" in lines[0] and "allowed: > 0" in lines[0]
    assert not (tmp_path / "run").exists()


def test_whole_tile_hint_and_head_detach_combinations():
    """The hint names a class_patch that divides the LR side (none when no multiple of 4 does); head_detach is
    refused where it cannot mean anything."""
    from fgdsr.config import check_whole_class_tiles

    with pytest.raises(UserError, match="use class_patch 20 or a patch_size that is a multiple of 128") as e:
        check_whole_class_tiles(load_config(None, {"loss": "fd", "patch_size": 160, "class_patch": 32}))
    assert "\n" not in str(e.value)  # LR 40: 32, 28, 24 do not divide it, 20 does
    with pytest.raises(UserError, match="use a patch_size that is a multiple of 128"):
        check_whole_class_tiles(load_config(None, {"loss": "fd", "patch_size": 72, "class_patch": 32}))
    for bad in (
        {"loss": "aux", "head_detach": True},
        {"loss": "cs", "fgd_head": "literal", "head_detach": True},
    ):
        with pytest.raises(UserError, match="head_detach"):
            load_config(None, bad)
    assert load_config(None, {"loss": "cs", "head_detach": True}).head_detach
