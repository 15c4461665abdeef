"""Checkpoints: round trip, atomic replace, training state, init_from, and one-line errors on bad files."""

from __future__ import annotations

import json
import os
import pickle

import pytest
import torch

from fgdsr import checkpoint as ck
from fgdsr.config import TrainConfig
from fgdsr.errors import UserError
from fgdsr.models import build_model

TINY = dict(depth=2, channels=8, scale=4)


def tiny_cfg(**kw) -> TrainConfig:
    return TrainConfig().replace(**{**TINY, **kw})


def _randomise(model: torch.nn.Module, seed: int = 1) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.1)


@pytest.mark.parametrize("loss", ["l1", "fd"])
def test_round_trip_weights_config_meta(tmp_path, loss):
    cfg = tiny_cfg(loss=loss, lr=3e-4)
    model = build_model(cfg)
    _randomise(model)
    path = ck.save_model_checkpoint(tmp_path / "c", model, cfg, {"step": 7, "mlflow_run_id": "abc"})
    assert sorted(os.listdir(path)) == ["config.json", "meta.json", "model.safetensors"]
    loaded, cfg2, meta = ck.load_model(path)
    assert cfg2 == cfg
    assert meta["step"] == 7 and meta["mlflow_run_id"] == "abc" and meta["fgdsr_version"]
    assert not loaded.training
    for (k, a), (k2, b) in zip(model.state_dict().items(), loaded.state_dict().items(), strict=True):
        assert k == k2 and torch.equal(a, b)
    x = torch.rand(1, 1, 12, 10)
    with torch.no_grad():
        assert torch.equal(model.eval()(x), loaded(x))


def test_replace_is_atomic_and_leaves_no_temp(tmp_path):
    cfg = tiny_cfg()
    model = build_model(cfg)
    ck.save_model_checkpoint(tmp_path / "c", model, cfg, {"step": 1})
    ck.save_model_checkpoint(tmp_path / "c", model, cfg, {"step": 2})
    assert sorted(os.listdir(tmp_path)) == ["c"]
    assert ck.read_meta(tmp_path / "c")["step"] == 2


def test_failed_save_keeps_old_checkpoint(tmp_path):
    cfg = tiny_cfg()
    model = build_model(cfg)
    ck.save_model_checkpoint(tmp_path / "c", model, cfg, {"step": 1})
    with pytest.raises((pickle.PicklingError, TypeError, AttributeError)):
        ck.save_model_checkpoint(tmp_path / "c", model, cfg, {"step": 3}, training_state={"f": lambda: 0})
    assert sorted(os.listdir(tmp_path)) == ["c"]
    assert ck.read_meta(tmp_path / "c")["step"] == 1


def test_training_state_round_trip_rng(tmp_path):
    import random

    import numpy as np

    cfg = tiny_cfg()
    model = build_model(cfg)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    model(torch.rand(2, 1, 8, 8)).mean().backward()
    opt.step()
    torch.manual_seed(5), np.random.seed(5), random.seed(5)
    ck.save_training_checkpoint(tmp_path / "t", model, cfg, {"step": 3}, opt, {"epoch": 1, "pos": 2})
    expect = (torch.rand(3), np.random.rand(3), random.random())
    torch.manual_seed(0), np.random.seed(0), random.seed(0)
    state = ck.load_training_state(tmp_path / "t")
    assert state["step"] == 3 and state["loader"] == {"epoch": 1, "pos": 2}
    ck.restore_rng_state(state["rng"])
    got = (torch.rand(3), np.random.rand(3), random.random())
    assert torch.equal(expect[0], got[0]) and np.array_equal(expect[1], got[1]) and expect[2] == got[2]
    opt2 = torch.optim.Adam(build_model(cfg).parameters(), lr=1e-3)
    opt2.load_state_dict(state["optimizer"])
    a, b = opt.state_dict()["state"], opt2.state_dict()["state"]
    assert all(torch.equal(a[i]["exp_avg"], b[i]["exp_avg"]) for i in a)


def _one_line(e: pytest.ExceptionInfo, name: str) -> None:
    msg = str(e.value)
    assert "\n" not in msg and name in msg, msg


def test_corrupt_files_are_one_line_errors(tmp_path):
    cfg = tiny_cfg()
    path = ck.save_model_checkpoint(tmp_path / "c", build_model(cfg), cfg, {})
    weights = path / ck.WEIGHTS
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])  # truncated
    with pytest.raises(UserError) as e:
        ck.load_model(path)
    _one_line(e, "model.safetensors")
    weights.write_bytes(b"\x00" * 64)  # garbage header
    with pytest.raises(UserError) as e:
        ck.load_model(path)
    _one_line(e, "model.safetensors")
    weights.write_bytes(data)
    (path / ck.CONFIG).write_text("{not json")
    with pytest.raises(UserError) as e:
        ck.load_model(path)
    _one_line(e, "config.json")
    (path / ck.CONFIG).write_text(json.dumps({**cfg.to_dict(), "no_such_field": 1}))
    with pytest.raises(UserError) as e:
        ck.load_model(path)
    _one_line(e, "config.json")
    (path / ck.CONFIG).unlink()
    with pytest.raises(UserError) as e:
        ck.load_model(path)
    _one_line(e, "config.json")
    with pytest.raises(UserError) as e:
        ck.load_model(tmp_path / "nowhere")
    _one_line(e, "nowhere")


def test_mismatched_weights_are_rejected(tmp_path):
    cfg = tiny_cfg()
    path = ck.save_model_checkpoint(tmp_path / "c", build_model(cfg), cfg, {})
    (path / ck.CONFIG).write_text(json.dumps(tiny_cfg(channels=16).to_dict()))  # other width
    with pytest.raises(UserError) as e:
        ck.load_model(path)
    _one_line(e, "model.safetensors")
    assert "expected" in str(e.value)
    (path / ck.CONFIG).write_text(json.dumps(tiny_cfg(loss="fd").to_dict()))  # heads missing in the file
    with pytest.raises(UserError) as e:
        ck.load_model(path)
    _one_line(e, "model.safetensors")
    assert "missing" in str(e.value)


def test_training_state_never_unpickles(tmp_path):
    cfg = tiny_cfg()
    path = ck.save_model_checkpoint(tmp_path / "c", build_model(cfg), cfg, {})

    class Evil:
        def __reduce__(self):
            return (os.system, ("touch " + str(tmp_path / "pwned"),))

    with open(path / ck.TRAINING_STATE, "wb") as f:
        pickle.dump({"step": 1, "optimizer": {}, "rng": {}, "loader": Evil()}, f)
    with pytest.raises(UserError) as e:
        ck.load_training_state(path)
    _one_line(e, "training_state.pt")
    assert not (tmp_path / "pwned").exists()
    (path / ck.TRAINING_STATE).write_bytes(b"garbage")
    with pytest.raises(UserError) as e:
        ck.load_training_state(path)
    _one_line(e, "training_state.pt")


def test_init_from_loads_trunk_keeps_heads(tmp_path):
    base_cfg = tiny_cfg(loss="l1")
    base = build_model(base_cfg)
    _randomise(base)
    src = ck.save_model_checkpoint(tmp_path / "base", base, base_cfg, {})
    fd = build_model(tiny_cfg(loss="fd"))
    heads_before = {k: v.clone() for k, v in fd.state_dict().items() if not k.startswith("trunk.")}
    report = ck.init_from_checkpoint(fd, src)
    assert report["loaded"] and all(k.startswith("trunk.") for k in report["loaded"])
    assert set(report["kept_init"]) == set(heads_before) and not report["ignored"]
    own = fd.state_dict()
    assert all(torch.equal(own[k], v) for k, v in base.state_dict().items())
    assert all(torch.equal(own[k], v) for k, v in heads_before.items())
    # a bare trunk state (no `trunk.` prefix) loads too
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in base.trunk.state_dict().items()}, str(src / ck.WEIGHTS))
    fd2 = build_model(tiny_cfg(loss="fd"))
    ck.init_from_checkpoint(fd2, src)
    assert all(torch.equal(fd2.state_dict()[k], v) for k, v in base.state_dict().items())


def test_init_from_other_shape_is_one_line(tmp_path):
    cfg = tiny_cfg()
    src = ck.save_model_checkpoint(tmp_path / "c", build_model(cfg), cfg, {})
    with pytest.raises(UserError) as e:
        ck.init_from_checkpoint(build_model(tiny_cfg(channels=16)), src)
    _one_line(e, "model.safetensors")
