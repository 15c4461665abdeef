"""`precision: auto | fp32 | bf16 | fp16` resolved for given device capabilities (fgdsr/precision.py)."""

import pytest

from fgdsr.errors import UserError
from fgdsr.precision import DeviceCaps, choose_precision, from_accelerate

CPU = DeviceCaps("cpu")
TURING = DeviceCaps("cuda", "NVIDIA GeForce RTX 2080 Ti", (7, 5))
VOLTA = DeviceCaps("cuda", "Tesla V100", (7, 0))
PASCAL = DeviceCaps("cuda", "GeForce GTX 1080", (6, 1))
AMPERE = DeviceCaps("cuda", "NVIDIA A100", (8, 0))
HOPPER = DeviceCaps("cuda", "NVIDIA H200", (9, 0))


@pytest.mark.parametrize(
    "caps, name, accelerate, scaler",
    [
        (CPU, "fp32", "no", False),
        (DeviceCaps("mps"), "fp32", "no", False),
        (PASCAL, "fp32", "no", False),  # no fp16 tensor cores: autocast would not pay
        (VOLTA, "fp16", "fp16", True),
        (TURING, "fp16", "fp16", True),  # the user's 2080 Ti: no bf16
        (AMPERE, "bf16", "bf16", False),
        (HOPPER, "bf16", "bf16", False),
    ],
)
def test_auto_fits_the_device(caps, name, accelerate, scaler):
    choice = choose_precision("auto", caps)
    assert (choice.name, choice.accelerate, choice.grad_scaler) == (name, accelerate, scaler)
    assert choice.reason.startswith("auto") and "\n" not in choice.reason
    if caps.capability:
        assert f"sm_{caps.capability[0]}{caps.capability[1]}" in choice.reason  # says why


def test_explicit_values():
    assert choose_precision("fp32", HOPPER).accelerate == "no"
    assert choose_precision("fp16", HOPPER).grad_scaler
    assert choose_precision("bf16", AMPERE).name == "bf16"
    assert choose_precision("bf16", CPU).accelerate == "bf16"  # CPU autocast has native bf16


@pytest.mark.parametrize(
    "requested, caps, words",
    [
        ("bf16", TURING, ["bf16", "sm_75", "auto"]),
        ("bf16", PASCAL, ["bf16", "sm_61"]),
        ("fp16", CPU, ["fp16", "cpu"]),
        ("half", CPU, ["precision", "auto, fp32, bf16, fp16"]),
    ],
)
def test_impossible_values_are_one_line(requested, caps, words):
    with pytest.raises(UserError) as e:
        choose_precision(requested, caps)
    msg = str(e.value)
    assert "\n" not in msg and "precision" in msg
    assert all(w in msg for w in words), msg


def test_accelerate_names_map_back():
    assert [from_accelerate(x) for x in ("no", "bf16", "fp16")] == ["fp32", "bf16", "fp16"]


def test_cli_impossible_precision_is_one_line(tmp_path):
    """On this CPU machine: fp16 (Accelerate would silently run fp32) is refused in one line, exit 2."""
    from typer.testing import CliRunner

    from orchestrator.cli import app

    r = CliRunner().invoke(app, ["train", "--set", "precision=fp16", "--out", str(tmp_path / "r"), "-q"])
    lines = [ln for ln in r.output.splitlines() if ln.strip() and not ln.startswith("train:")]
    assert r.exit_code == 2 and len(lines) == 1 and "fp16 needs a GPU" in lines[0], r.output
    assert not (tmp_path / "r").exists()
