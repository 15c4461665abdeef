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
