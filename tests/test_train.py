"""Training: lr schedule values, exact resume, callbacks, --init-from, `fgdsr train` CLI, overfitting one image."""

from __future__ import annotations

import json
import math

import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from fgdsr import checkpoint as ck
from fgdsr.config import TrainConfig, load_config
from fgdsr.errors import UserError
from fgdsr.train import lr_at, train
from orchestrator.cli import app

# a model and batch small enough for a few steps per second on a shared 2-core machine
SMALL = dict(
    depth=1, channels=8, patch_size=32, class_patch=8, batch_size=4, val_max_images=1, log_every=1, lr=1e-3
)
DATA: dict[str, str] = {}


@pytest.fixture(scope="module", autouse=True)
def small_data(tmp_path_factory):
    """Crops of built-in photos (train: 2 of 96 px, val: 1 of 64 px) in a temp dir: fast start-up and validation."""
    import numpy as np
    from PIL import Image

    from fgdsr.data.datasets import resolve_dataset

    root = tmp_path_factory.mktemp("data")
    for split, src, n, side in (("train", "builtin-train", 2, 96), ("val", "builtin-eval", 1, 64)):
        (root / split).mkdir()
        ds = resolve_dataset(src)
        for i in range(n):
            img = np.asarray(ds.image(i))
            h, w = img.shape[:2]
            y, x = (h - side) // 2, (w - side) // 2
            Image.fromarray(np.ascontiguousarray(img[y : y + side, x : x + side])).save(
                root / split / f"{i}.png"
            )
    DATA.update(train_dataset=str(root / "train"), val_dataset=str(root / "val"))
    yield root
    DATA.clear()


def small_cfg(**kw) -> TrainConfig:
    return load_config(None, {**SMALL, **DATA, **kw})


def test_lr_schedule_known_values():
    cfg = TrainConfig().replace(lr=1e-3, lr_schedule="step", lr_step=100, lr_gamma=0.5, max_steps=1000)
    assert [lr_at(cfg, s) for s in (0, 99, 100, 250)] == [1e-3, 1e-3, 5e-4, 2.5e-4]
    cos = cfg.replace(lr_schedule="cosine", max_steps=200)
    assert lr_at(cos, 0) == 1e-3
    assert math.isclose(lr_at(cos, 100), 5e-4)
    assert math.isclose(lr_at(cos, 200), 0.0, abs_tol=1e-18) and lr_at(cos, 500) == lr_at(cos, 200)


def _weights(path) -> dict[str, torch.Tensor]:
    return load_file(str(path / ck.WEIGHTS))


def test_resume_is_bit_identical(tmp_path):
    """N + N steps with a resume == 2N steps: weights, Adam moments and the data position (CPU)."""
    n = 3
    cfg = small_cfg(max_steps=2 * n, val_every=100, lr_schedule="step", lr_step=4, batch_size=2)
    full = train(cfg, tmp_path / "full", progress=False)
    half = train(cfg.replace(max_steps=n), tmp_path / "split", progress=False)
    assert half.final_step == n
    resumed = train(cfg, tmp_path / "split", resume=True, progress=False)
    assert full.final_step == resumed.final_step == 2 * n
    a, b = _weights(full.last_checkpoint), _weights(resumed.last_checkpoint)
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a), [k for k in a if not torch.equal(a[k], b[k])]
    sa, sb = ck.load_training_state(full.last_checkpoint), ck.load_training_state(resumed.last_checkpoint)
    assert sa["loader"] == sb["loader"] == {"pos": 2 * n, "seed": cfg.seed}
    for i, st in sa["optimizer"]["state"].items():
        assert torch.equal(st["exp_avg_sq"], sb["optimizer"]["state"][i]["exp_avg_sq"])
    assert torch.equal(sa["rng"]["torch"], sb["rng"]["torch"])
    # the same run without the resume state would differ: the test can fail
    fresh = train(cfg.replace(max_steps=n, seed=1), tmp_path / "other", progress=False)
    c = _weights(fresh.last_checkpoint)
    assert any(not torch.equal(a[k], c[k]) for k in a)


def test_resume_rejects_changed_config_and_missing_run(tmp_path):
    cfg = small_cfg(max_steps=1, val_every=1)
    train(cfg, tmp_path / "r", progress=False)
    with pytest.raises(UserError) as e:
        train(cfg.replace(lr=0.5), tmp_path / "r", resume=True, progress=False)
    assert "lr" in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(UserError) as e:
        train(cfg, tmp_path / "nothing", resume=True, progress=False)
    assert "nothing" in str(e.value)


class Recorder:
    def __init__(self, stop_at: int | None = None) -> None:
        self.events: list[tuple] = []
        self.stop_at = stop_at

    def on_step(self, step, logs):
        self.events.append(("step", step, sorted(logs)))

    def on_validation(self, step, metrics):
        self.events.append(("val", step, metrics["val_psnr"]))
        return self.stop_at is not None and step >= self.stop_at

    def on_checkpoint(self, step, path):
        assert (path / ck.WEIGHTS).is_file() and (path / ck.META).is_file()
        self.events.append(("ckpt", step, path.name))


def test_callbacks_order_and_stop(tmp_path):
    rec = Recorder(stop_at=2)
    cfg = small_cfg(max_steps=6, val_every=2, log_every=2, loss="cs")
    res = train(cfg, tmp_path / "cb", callbacks=[rec], progress=False)
    kinds = [(e[0], e[1]) for e in rec.events]
    assert kinds[:3] == [("step", 2), ("val", 2), ("ckpt", 2)]
    assert ("ckpt", 2, "best") in rec.events  # first validation is always the best so far
    logs = rec.events[0][2]
    assert {"loss", "l_r", "l_c1", "lr", "it_per_s"} <= set(logs)
    assert res.stopped_early and res.final_step == 2
    meta = ck.read_meta(res.last_checkpoint)
    assert meta["step"] == 2 and "val_psnr" in meta["metrics"]


def test_meta_passthrough_and_grad_accum(tmp_path):
    cfg = small_cfg(max_steps=2, val_every=2, grad_accum=2)
    res = train(cfg, tmp_path / "m", progress=False, meta={"mlflow_run_id": "r123"})
    assert ck.read_meta(res.last_checkpoint)["mlflow_run_id"] == "r123"
    assert ck.read_meta(res.best_checkpoint)["mlflow_run_id"] == "r123"
    assert ck.load_training_state(res.last_checkpoint)["loader"]["pos"] >= 4  # 2 steps x 2 micro-batches


def test_accelerator_passed_in(tmp_path):
    from accelerate import Accelerator

    res = train(
        small_cfg(max_steps=1, val_every=1), tmp_path / "a", accelerator=Accelerator(cpu=True), progress=False
    )
    assert res.final_step == 1 and res.best_val_psnr > 10


def test_bf16_after_fp32_in_one_process(tmp_path):
    """Mixed precision through Accelerate (bf16 autocast on CPU), after an fp32 run in the same process."""
    res = train(
        small_cfg(max_steps=1, val_every=1, loss="fd", precision="bf16"), tmp_path / "b", progress=False
    )
    assert res.final_step == 1 and math.isfinite(res.best_val_psnr)
    assert load_file(str(res.last_checkpoint / ck.WEIGHTS))["trunk.input_conv.weight"].dtype == torch.float32


@pytest.mark.parametrize("loss", ["cs", "fd", "aux"])
def test_init_from_starts_at_the_baseline(tmp_path, loss):
    """Heads the baseline lacks are initialised so the model starts at the baseline's output (issue 7)."""
    base = train(small_cfg(max_steps=3, val_every=3), tmp_path / "base", progress=False)
    model_b, _, _ = ck.load_model(base.last_checkpoint)
    cfg = small_cfg(loss=loss, max_steps=1, val_every=1, init_from=str(base.last_checkpoint))
    from fgdsr.models import build_model

    model = build_model(cfg)
    ck.init_from_checkpoint(model, base.last_checkpoint)
    x = torch.rand(2, 1, 24, 20)
    with torch.no_grad():
        diff = (model.eval()(x) - model_b(x)).abs().max().item()
    assert diff < 2e-3, diff  # < 0.5 grey level: the same image after uint8 rounding almost everywhere
    res = train(cfg, tmp_path / "ft", progress=False)
    start = res.history[0]
    assert start["step"] == 0
    base_psnr = [h for h in base.history if h["step"] == 3][0]["val_psnr"]
    assert abs(start["val_psnr"] - base_psnr) < 0.02, (start, base_psnr)
    assert ck.read_meta(res.last_checkpoint)["provenance"]["init_from"] == str(base.last_checkpoint)


# ------------------------------------------------------------------------------------------- CLI


def _one_error_line(r) -> str:
    assert r.exit_code == 2, r.output
    lines = [ln for ln in r.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), r.output
    return lines[0]


def test_cli_train_set_overrides_and_errors(tmp_path):
    runner = CliRunner()
    out = tmp_path / "run"
    sets = [
        "--set",
        "max_steps=2",
        "--set",
        "val_every=2",
        "--set",
        "depth=1",
        "--set",
        "channels=4",
        "--set",
        "patch_size=32",
        "--set",
        "class_patch=8",
        "--set",
        "batch_size=2",
        "--set",
        "val_max_images=1",
        "--set",
        "loss=fd",
    ]
    r = runner.invoke(app, ["train", *sets, "--out", str(out), "--quiet"])
    assert r.exit_code == 0, r.output
    saved = json.loads((out / "last" / "config.json").read_text())
    assert saved["max_steps"] == 2 and saved["loss"] == "fd" and saved["channels"] == 4
    assert "best val PSNR" in r.output
    # the run exists: a second train without --resume is refused; with --resume and more steps it continues
    _one_error_line(runner.invoke(app, ["train", *sets, "--out", str(out)]))
    r = runner.invoke(app, ["train", *sets, "--set", "max_steps=3", "--out", str(out), "--resume", "--quiet"])
    assert r.exit_code == 0, r.output
    assert ck.read_meta(out / "last")["step"] == 3
    assert "no_such" in _one_error_line(
        runner.invoke(app, ["train", "--set", "no_such=1", "--out", str(tmp_path / "x")])
    )
    assert "lr" in _one_error_line(
        runner.invoke(app, ["train", "--set", "lr=fast", "--out", str(tmp_path / "x")])
    )
    _one_error_line(runner.invoke(app, ["train", "--set", "max_steps", "--out", str(tmp_path / "x")]))
    _one_error_line(runner.invoke(app, ["train", "--config", str(tmp_path / "none.yaml")]))
    _one_error_line(runner.invoke(app, ["train", "--resume", "--out", str(tmp_path / "fresh")]))
    bad = tmp_path / "bad.yaml"
    bad.write_text("loss: [unclosed\n")
    _one_error_line(runner.invoke(app, ["train", "--config", str(bad)]))
    _one_error_line(
        runner.invoke(app, ["train", "--init-from", str(tmp_path / "nope"), "--out", str(tmp_path / "y")])
    )


# ------------------------------------------------------------------------------------------- overfit


def _one_image_dataset(tmp_path):
    """A folder holding the central 64 x 64 crop of the built-in 'astronaut' (in the test's temp dir).

    A crop keeps training and validation cheap; astronaut has the flag's and the suit's sharp edges, where a
    model that memorises the image gains most over bicubic (chelsea's fur, measured, gains nothing in 400 steps).
    """
    import numpy as np
    from PIL import Image

    from fgdsr.data.datasets import resolve_dataset

    ds = resolve_dataset("builtin-eval")
    img = np.asarray(ds.image(ds.names.index("astronaut")))
    h, w = img.shape[:2]
    y, x = (h - 64) // 2, (w - 64) // 2
    folder = tmp_path / "one"
    folder.mkdir()
    Image.fromarray(np.ascontiguousarray(img[y : y + 64, x : x + 64])).save(folder / "astronaut64.png")
    return folder


def _bicubic_psnr(folder, scale: int) -> float:
    from fgdsr.data.io import read_image
    from fgdsr.metrics.protocol import bicubic_row

    (path,) = list(folder.iterdir())
    return float(bicubic_row(read_image(path), scale)[0])


@pytest.mark.slow
@pytest.mark.parametrize("loss", ["l1", "cs", "fd"])
def test_overfits_one_image_beats_bicubic(tmp_path, loss):
    """A tiny model overfits one built-in image and beats bicubic by > 1 dB on it within a CPU minute.

    Measured (seed 0, one thread): l1 +1.76 dB, cs +1.59, fd +1.47 at step 400, 13-19 s of CPU time each.
    The CPU time is printed, not asserted (timings belong in docs/BENCHMARKS.md, not in unit tests).
    """
    import resource

    folder = _one_image_dataset(tmp_path)
    cfg = load_config(
        None,
        {
            "train_dataset": str(folder),
            "val_dataset": str(folder),
            "loss": loss,
            "depth": 3,
            "channels": 32,
            "patch_size": 32,
            "class_patch": 8,  # the LR patch (8) is one whole Class-Module tile
            "batch_size": 8,
            "lr": 5e-3,
            "alpha": 0.1,  # alpha = 1 at this lr: the CE gradient wrecks the shared trunk (cs 19.3 dB, fd 23.1)
            "lr_schedule": "step",
            "random_downscale": False,
            "max_steps": 400,
            "val_every": 100,
            "val_max_images": None,
            "seed": 0,
        },
    )
    cpu0 = resource.getrusage(resource.RUSAGE_SELF)
    res = train(cfg, tmp_path / loss, progress=False)
    cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (cpu1.ru_utime + cpu1.ru_stime) - (cpu0.ru_utime + cpu0.ru_stime)
    bic = _bicubic_psnr(folder, cfg.scale)
    print(
        f"{loss}: best {res.best_val_psnr:.2f} dB vs bicubic {bic:.2f} dB; {cpu:.1f} CPU s, {res.wall_time_s:.1f} s wall"
    )
    assert res.best_val_psnr > bic + 1.0, (res.history, bic)


# ------------------------------------------------------------------------------------------- EMA


def test_ema_update_is_the_hand_computed_decay():
    """First update copies the weights, then ema = d * ema + (1 - d) * w (fgdsr.train.make_ema)."""
    from fgdsr.train import make_ema

    lin = torch.nn.Linear(2, 1, bias=True)
    cfg = TrainConfig().replace(ema_decay=0.75)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[1.0, -2.0]]))
        lin.bias.fill_(4.0)
    ema = make_ema(lin, cfg, torch.device("cpu"))
    ema.update_parameters(lin)  # copy
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[3.0, 2.0]]))
        lin.bias.fill_(0.0)
    ema.update_parameters(lin)
    assert torch.equal(ema.module.weight, torch.tensor([[1.5, -1.0]]))  # 0.75*1 + 0.25*3, 0.75*-2 + 0.25*2
    assert torch.equal(ema.module.bias, torch.tensor([3.0]))
    ema.update_parameters(lin)
    assert torch.allclose(ema.module.weight, torch.tensor([[0.75 * 1.5 + 0.25 * 3, 0.75 * -1.0 + 0.25 * 2]]))
    assert int(ema.n_averaged) == 3 and not ema.module.weight.requires_grad
    assert make_ema(lin, TrainConfig(), torch.device("cpu")) is None  # ema_decay 0: off


@pytest.mark.parametrize(
    "extra",
    [
        dict(ema_decay=0.9, ema_start=2, pyramid_on="loader"),  # the EMA starts before the resume point
        dict(ema_decay=0.5, ema_start=5, pyramid_on="device", augment="flip"),  # ... and after it
    ],
    ids=["ema-loader", "ema-device"],
)
def test_resume_with_ema_and_both_data_paths_is_bit_identical(tmp_path, extra):
    n = 4  # a multiple of val_every: the split run validates where the full one does
    cfg = small_cfg(max_steps=2 * n, val_every=2, batch_size=2, lr_schedule="step", lr_step=3, **extra)
    full = train(cfg, tmp_path / "full", progress=False)
    train(cfg.replace(max_steps=n), tmp_path / "split", progress=False)
    resumed = train(cfg, tmp_path / "split", resume=True, progress=False)
    for name in ("last", "best"):
        a, b = _weights(full.out_dir / name), _weights(resumed.out_dir / name)
        assert all(torch.equal(a[k], b[k]) for k in a), name
    sa, sb = ck.load_training_state(full.last_checkpoint), ck.load_training_state(resumed.last_checkpoint)
    assert all(torch.equal(sa["train_weights"][k], sb["train_weights"][k]) for k in sa["train_weights"])
    assert sa["extra"]["ema_averaged"] == sb["extra"]["ema_averaged"] == 2 * n - extra["ema_start"]
    assert full.history == resumed.history
    # the checkpoint holds the EMA, the training state the raw weights: they differ
    ema_w = _weights(full.last_checkpoint)
    assert any(not torch.equal(ema_w[k], sa["train_weights"][k]) for k in ema_w)


def test_ema_weights_are_what_validation_and_checkpoints_use(tmp_path):
    """The EMA of the raw weights, step by step, equals what `last/` holds (decay 0.8, start after step 1)."""
    from fgdsr.models import build_model

    cfg = small_cfg(max_steps=3, val_every=1, ema_decay=0.8, ema_start=1, lr_schedule="step")
    raws = []
    for s in (1, 2, 3):
        res = train(cfg.replace(max_steps=s), tmp_path / f"s{s}", progress=False)
        raws.append(ck.load_training_state(res.last_checkpoint)["train_weights"])
    expect = {k: raws[1][k] * 1.0 for k in raws[1]}  # first update (step 2) copies; step 3 averages
    expect = {k: 0.8 * expect[k] + 0.2 * raws[2][k] for k in expect}
    got = _weights(tmp_path / "s3" / "last")
    assert all(torch.allclose(got[k], expect[k], atol=1e-7) for k in got)
    assert all(
        torch.equal(_weights(tmp_path / "s1" / "last")[k], raws[0][k]) for k in got
    )  # before the start
    model = build_model(cfg)  # the checkpoint loads as a plain model (what export and evaluate read)
    ck.load_state_strict(model, got, tmp_path / "s3" / "last" / ck.WEIGHTS)


def test_channels_last_trains_and_saves_plain_tensors(tmp_path):
    res = train(small_cfg(max_steps=2, val_every=2, channels_last=True), tmp_path / "cl", progress=False)
    w = _weights(res.last_checkpoint)
    assert all(t.is_contiguous() for t in w.values()) and math.isfinite(res.best_val_psnr)
    base = train(small_cfg(max_steps=2, val_every=2), tmp_path / "base", progress=False)
    b = _weights(base.last_checkpoint)
    assert all(torch.allclose(w[k], b[k], atol=1e-5) for k in w)  # the same maths in another layout


@pytest.mark.slow
def test_compile_matches_eager(tmp_path):
    """compile=true (torch.compile of the training forward, and its backward) follows the eager trajectory."""
    cfg = small_cfg(max_steps=2, val_every=2)
    eager = train(cfg, tmp_path / "eager", progress=False)
    comp = train(cfg.replace(compile=True), tmp_path / "compiled", progress=False)
    a, b = _weights(eager.last_checkpoint), _weights(comp.last_checkpoint)
    assert all(torch.allclose(a[k], b[k], atol=1e-5) for k in a)
    assert abs(eager.best_val_psnr - comp.best_val_psnr) < 0.01


def test_compile_failure_is_one_line():
    """torch.compile errors (here a real InductorError instance) become a UserError naming the field and the fix."""
    from torch._inductor.exc import InductorError

    from fgdsr.train import _compile_errors

    with pytest.raises(UserError) as e, _compile_errors(True):
        raise InductorError(AssertionError("codegen"), None)
    msg = str(e.value)
    assert "'compile'" in msg and "compile: false" in msg and "InductorError" in msg and "\n" not in msg
    with pytest.raises(ValueError), _compile_errors(True):  # other errors pass through
        raise ValueError("not a compile error")
    with pytest.raises(ValueError), _compile_errors(False):
        raise ValueError("off")


# ------------------------------------------------------------------------------------------- preemption


PREEMPT = dict(max_steps=40, val_every=10, batch_size=2, lr_schedule="cosine", ema_decay=0.9)
# one torch thread in every process of the test: the same arithmetic everywhere (and no OpenMP contention)
ONE_THREAD = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def _train_cmd(out, workers: int, resume: bool = False) -> list[str]:
    import sys

    sets = {**SMALL, **DATA, **PREEMPT, "workers": workers}
    args = [a for k, v in sets.items() for a in ("--set", f"{k}={v}")]
    return [sys.executable, "-m", "orchestrator", "train", *args, "--out", str(out), "-q"] + (
        ["--resume"] if resume else []
    )


def _run_train(cmd: list[str]):
    import os
    import subprocess

    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env={**os.environ, **ONE_THREAD})
    assert r.returncode == 0, r.stdout + r.stderr


@pytest.mark.slow
@pytest.mark.parametrize("sig, workers", [("SIGTERM", 0), ("SIGINT", 2)])
def test_signal_writes_checkpoint_and_resume_is_bit_identical(tmp_path, sig, workers):
    """A real SIGTERM (to the process) / SIGINT (to its process group, as Ctrl-C: DataLoader workers get it too)
    to a real `fgdsr train`: exit 75 with one line; --resume finishes bit-identically to an uninterrupted run."""
    import os
    import signal
    import subprocess

    from fgdsr.preemption import PREEMPTED_EXIT_CODE

    out = tmp_path / "run"
    proc = subprocess.Popen(
        _train_cmd(out, workers),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
        env={**os.environ, **ONE_THREAD},
    )
    try:
        # "train: ..." then "precision: ..." (printed just before the first step)
        first, second = proc.stdout.readline(), proc.stdout.readline()
        assert first.startswith("train:") and second.startswith("precision:"), (first, second)
        if sig == "SIGTERM":
            os.kill(proc.pid, signal.SIGTERM)
        else:
            os.killpg(os.getpgid(proc.pid), signal.SIGINT)
        rest, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(os.getpgid(proc.pid), signal.SIGKILL)
            proc.wait()
    assert proc.returncode == PREEMPTED_EXIT_CODE, rest
    lines = [ln for ln in rest.splitlines() if ln.strip()]
    assert lines[-1].startswith(f"stopped by {sig} at step ") and "--resume" in lines[-1], rest
    stopped = int(lines[-1].split(" at step ")[1].split(":")[0])
    assert 0 < stopped < PREEMPT["max_steps"] and ck.read_meta(out / "last")["step"] == stopped
    assert ck.load_training_state(out / "last")["loader"]["pos"] == stopped
    assert not [p for p in out.iterdir() if ".tmp-" in p.name or ".old-" in p.name]  # nothing half-written
    _run_train(_train_cmd(out, workers, resume=True))
    full = tmp_path / "full"
    _run_train(_train_cmd(full, 0))
    for name in ("last", "best"):
        a, b = _weights(full / name), _weights(out / name)
        assert all(torch.equal(a[k], b[k]) for k in a), name
    sa, sb = ck.load_training_state(full / "last"), ck.load_training_state(out / "last")
    assert all(torch.equal(sa["train_weights"][k], sb["train_weights"][k]) for k in sa["train_weights"])
    assert sa["extra"]["history"] == sb["extra"]["history"]
