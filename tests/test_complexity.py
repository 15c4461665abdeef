"""trt.complexity and `fgdsr complexity`: the literature's numbers exactly, FGD heads counted, CLI/JSON/errors."""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

from orchestrator.cli import app
from trt.complexity import DEFAULT_HR, PAPER_PARAMS_MULT_ADDS, complexity, count
from trt.shapes import Size, lr_size, parse_size

HR = DEFAULT_HR


def counted(*args, **kwargs):
    """(the issue-5 record, the Counts) of trt.complexity.complexity."""
    c = complexity(*args, **kwargs)
    return c.record(), c.counts


@pytest.mark.parametrize(
    ("target", "kwargs", "params", "weights", "gmacs"),
    [
        ("srcnn", {}, 57_281, 57_184, "52.70"),  # FGD paper Table 2 / CARN
        ("vdsr", {}, 665_921, 664_704, "612.59"),
        ("lapsrn", {}, 814_242, 812_768, "117.49"),  # official x4, transposed convs per input position
        ("lapsrn", {"convention": "naive"}, 814_242, 812_768, "149.35"),  # per output position: CARN's 149.4
    ],
)
def test_reference_numbers_exact(target, kwargs, params, weights, gmacs):
    record, _ = counted(target, **kwargs)
    assert (record["params"], record["weights"]) == (params, weights)
    assert f"{record['mult_adds'] / 1e9:.2f}" == gmacs


def test_lapsrn_x4_mult_adds_by_hand():
    """LR 320x180 = 57,600 px; 36,864 MACs per 64->64 3x3 position; residual convs at 2x and 4x."""
    lr, l2, l4 = 57_600, 230_400, 921_600
    c = 36_864
    true = 576 * lr + 10 * c * lr + c * lr + 576 * l2 + 16 * lr + 10 * c * l2 + c * l2 + 576 * l4 + 16 * l2
    naive = true + 3 * (c * lr + 16 * lr + c * l2 + 16 * l2)  # transposed convs x stride^2
    _, prof = counted("lapsrn")
    assert (prof.mult_adds_true, prof.mult_adds_naive) == (true, naive)


def test_transposed_conv_true_vs_naive_on_one_layer():
    layer = torch.nn.ConvTranspose2d(1, 5, 4, 2, 1)
    prof = count(layer, Size(height=7, width=6, lr=True))
    assert prof.mult_adds_true == 7 * 6 * 5 * 16
    assert prof.mult_adds_naive == 14 * 12 * 5 * 16
    assert (prof.params, prof.weights) == (5 * 16 + 5, 5 * 16)


def test_fd_heads_counted_and_aux_costs_exactly_the_baseline():
    base, bprof = counted("lapsrn")
    aux, _ = counted("lapsrn", loss="aux")
    assert {k: v for k, v in aux.items() if k != "model"} == {k: v for k, v in base.items() if k != "model"}
    fd, fprof = counted("lapsrn", loss="fd")
    from fgdsr.config import TrainConfig
    from fgdsr.models import build_model

    model = build_model(TrainConfig().replace(loss="fd"))
    extra = [
        model.heads[str(model.levels - 1)],
        model.class_module,
    ]  # the deployed heads: K-bin head, Class-Module
    kernels = [
        m.weight.numel()
        for h in extra
        for m in h.modules()
        if isinstance(m, torch.nn.Conv2d | torch.nn.Linear)
    ]
    assert fd["weights"] == base["weights"] + sum(kernels)
    assert fd["params"] == base["params"] + sum(p.numel() for h in extra for p in h.parameters())
    hr_pixels = 1280 * 720
    head_macs = hr_pixels * 64 * 32
    assert fd["mult_adds"] - base["mult_adds"] >= head_macs
    # the channel argmax over K = 32 bins (`max(dim=1).indices`, fgd.channel_argmax) reads 32 values per HR
    # pixel: element-wise work that Mult-Adds hide
    assert fprof.by_op["max"] >= 32 * hr_pixels
    assert fd["elementwise"] > base["elementwise"] + 32 * hr_pixels


def test_weight_norm_is_folded_before_counting():
    from fgdsr.config import TrainConfig
    from fgdsr.models import build_model

    model = build_model(TrainConfig().replace(weight_norm=True))
    prof = count(model, lr_size(HR, 4))
    assert (prof.params, prof.weights) == (814_242, 812_768)


def test_checkpoint_target(tmp_path):
    from fgdsr.checkpoint import save_model_checkpoint
    from fgdsr.config import TrainConfig
    from fgdsr.models import build_model

    cfg = TrainConfig().replace(depth=2, channels=16, scale=2, patch_size=64)
    ckpt = save_model_checkpoint(tmp_path / "tiny", build_model(cfg), cfg, {})
    record, _ = counted(str(ckpt), hr_size=Size(height=48, width=64))
    # input 9*16, level: 2 convs 9*16*16, up-conv 9*16*16, residual 9*16, image 16
    weights = 144 + 3 * 2304 + 144 + 16
    assert record["model"] == "tiny" and record["scale"] == 2 and record["weights"] == weights
    with pytest.raises(Exception, match="x2 model"):
        complexity(str(ckpt), scale=4)


def test_one_size_type_with_named_axes():
    """'1280x720' is 1280 wide, 720 high; the LR input rounds each axis (x3: 1280/3 -> 427)."""
    hr = parse_size("1280x720")
    assert (hr.height, hr.width, hr.lr) == (720, 1280, False) and str(hr) == "1280x720" and hr == HR
    assert lr_size(hr, 4) == Size(height=180, width=320, lr=True)
    assert lr_size(hr, 3).hw == (240, 427)
    assert complexity("lapsrn", scale=3).hr_size == hr  # counted at the HR size it was asked for


def test_paper_complexity_columns_are_named_as_such():
    assert PAPER_PARAMS_MULT_ADDS["lapsrn"] == (862_000, 186.2e9)


def test_config_target_counts_like_its_checkpoint(tmp_path):
    from fgdsr.checkpoint import save_model_checkpoint
    from fgdsr.config import TrainConfig
    from fgdsr.models import build_model

    cfg = TrainConfig().replace(loss="fd", depth=2, channels=16)
    ckpt = save_model_checkpoint(tmp_path / "fd", build_model(cfg), cfg, {})
    size = Size(height=48, width=64)
    assert complexity(cfg, hr_size=size).counts == complexity(str(ckpt), hr_size=size).counts


def test_cli_json_schema_and_errors():
    runner = CliRunner()
    res = runner.invoke(app, ["complexity", "lapsrn", "--convention", "naive", "--json"])
    assert res.exit_code == 0, res.output
    record = json.loads(res.stdout)
    assert list(record) == ["model", "scale", "hr_size", "params", "weights", "mult_adds", "elementwise"]
    assert record["hr_size"] == [1280, 720] and record["mult_adds"] == 149_350_809_600
    res = runner.invoke(app, ["complexity", "vdsr"])
    assert res.exit_code == 0 and "664,704" in res.stdout
    for args, needle in [
        (["complexity", "nosuch"], "not a model name"),
        (["complexity", "lapsrn", "--hr-size", "12y"], "--hr-size"),
        (["complexity", "lapsrn", "--convention", "odd"], "--convention"),
        (["complexity", "srcnn", "--loss", "fd"], "only lapsrn"),
        (["complexity", "lapsrn", "--layout", "x"], "--layout"),
    ]:
        res = runner.invoke(app, args)
        assert res.exit_code == 2, (args, res.output)
        assert needle in res.output and "Traceback" not in res.output
