"""Training: one `TrainConfig` -> best and last checkpoints. A flat loop (nanoGPT style) on Accelerate.

    result = train(load_config("fgdsr/configs/tiny.yaml"), "runs/tiny")

Accelerate does device placement, mixed precision (`cfg.precision`, resolved for the device by
fgdsr/precision.py) and multi-GPU (`accelerate launch -m orchestrator train ...`); gradient accumulation is
written out by hand (`cfg.grad_accum` micro-batches per optimizer step, gradient sync only on the last one).
One "step" is one optimizer update. Optional, all off by default: an EMA of the weights (`ema_decay`; then
validation and the checkpoints' model.safetensors use the EMA copy), `compile` (torch.compile of the model's
training forward), `channels_last`, and `pyramid_on: device` (the LR input and the targets made batched on
the training device from the loader's HR patches).

Determinism: the model is initialised after seeding; the training batches come from the endless
`make_train_loader(cfg, seed, start_step)` whose samples are pure functions of (seed, index), with a seed
derived from (cfg.seed, process index); the training state stores the data position (batches taken), every
RNG state (python, numpy, torch, CUDA), the raw weights and the EMA. N + N steps with a resume are
bit-identical to 2N steps on CPU, with or without EMA, on both data paths (tests/test_train.py).

Preemption (`handle_signals=True`, fgdsr/preemption.py): SIGTERM / SIGINT -> a training checkpoint at the
next step boundary and `TrainResult.preempted`.

The orchestrator plugs Ray Tune and MLflow in through callbacks (see `Callback`); this module imports neither.
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from fgdsr.errors import UserError

if TYPE_CHECKING:
    import torch
    from torch import nn

    from fgdsr.config import TrainConfig
    from fgdsr.precision import PrecisionChoice

RESUME_DIR = "last"  # train(resume=True) continues from out_dir / RESUME_DIR (a training checkpoint)
BEST_DIR = "best"
# Fields that may change between a run and its resume (they do not change the trajectory up to the saved step).
RESUMABLE_CHANGES = ("max_steps", "val_every", "val_max_images", "log_every", "workers", "data_root")
VAL_SAMPLES = 2  # validation images handed to `on_val_samples` (the tracked crop grid)


@dataclass(frozen=True)
class StartInfo:
    """What `on_start` receives: the starting step, the resolved precision, the device, resumed or not."""

    step: int
    precision: PrecisionChoice
    device: str
    resumed: bool
    processes: int
    main: bool  # the main process (rank 0): the one that writes checkpoints


@dataclass(frozen=True)
class ValSample:
    """One validation image for `on_val_samples`: LR (h, w, 3) float in ~[0, 1], HR and SR (H, W, 3) uint8."""

    name: str
    lr: np.ndarray
    hr: np.ndarray
    sr: np.ndarray


class Callback:
    """Hooks for the orchestrator (Ray Tune, MLflow). All optional (duck typing: any object with some of them).

    Called on every process (Ray Train's report is a barrier on all workers); checkpoints are written by the
    main process only, so `path` exists there. Order at a validation step: the checkpoints are written, then
    `on_validation(step, metrics)`, `on_val_samples(step, samples)` (main process, only if some callback has
    it), then `on_checkpoint(step, out_dir/last)` and, when the PSNR improved, `on_checkpoint(step, out_dir/best)`.
    A preempted run calls `on_checkpoint(step, out_dir/last)` for its preemption checkpoint.
    A hook that returns True asks the loop to stop after this step (decided on the main process; the last
    checkpoint is still written).
    """

    def on_start(self, info: StartInfo) -> bool | None:
        """Once, before the first step (after a resume: before the first new step)."""

    def on_step(self, step: int, logs: dict[str, float]) -> bool | None:
        """Every `cfg.log_every` steps and at the last step: mean loss terms since the previous call, lr, it/s."""

    def on_validation(self, step: int, metrics: dict[str, float]) -> bool | None:
        """Every `cfg.val_every` steps and at the end: val_psnr (dB), val_ssim, best_val_psnr."""

    def on_val_samples(self, step: int, samples: list[ValSample]) -> bool | None:
        """After `on_validation`: the first VAL_SAMPLES validation images with the (EMA) model's SR."""

    def on_checkpoint(self, step: int, path: Path) -> bool | None:
        """After a complete checkpoint directory has been written (`out_dir/last` or `out_dir/best`)."""


@dataclass
class TrainResult:
    """What `train` returns. Paths are checkpoint directories; PSNR in dB (Y channel, shave = scale).

    preempted: the signal's name (SIGTERM, SIGINT) when a signal stopped the run (`last` is then a complete
    training checkpoint at `final_step`), else None.
    """

    out_dir: Path
    last_checkpoint: Path
    best_checkpoint: Path | None
    best_val_psnr: float | None
    best_step: int | None
    final_step: int
    history: list[dict[str, float]] = field(default_factory=list)
    wall_time_s: float = 0.0
    stopped_early: bool = False
    preempted: str | None = None
    precision: str = "fp32"


# ------------------------------------------------------------------------------------------- schedule


def lr_at(cfg: TrainConfig, step: int) -> float:
    """Learning rate for the update after `step` completed updates (a pure function: nothing to checkpoint).

    step: halved (x lr_gamma) every lr_step updates (the paper). cosine: from lr down to 0 at max_steps.
    """
    if cfg.lr_schedule == "step":
        return cfg.lr * cfg.lr_gamma ** (step // cfg.lr_step)
    progress = min(step, cfg.max_steps) / cfg.max_steps
    return cfg.lr * 0.5 * (1.0 + math.cos(math.pi * progress))


# ------------------------------------------------------------------------------------------- data


class BatchStream:
    """Endless training batches with a resumable position.

    `make_train_loader(cfg, seed, start_step)` is an endless stream whose sample i is a pure function of
    (seed, i) (fgdsr/data/sampler.py), so the position is just the number of batches taken: a resumed run
    re-opens the stream at that batch, with no replay. With `cfg.pyramid_on == "device"` the loader gives HR
    patches and `make_pyramid` makes the LR input and the targets here, batched, on the training device.
    """

    def __init__(self, cfg: TrainConfig, seed: int, device: torch.device) -> None:
        self.cfg, self.seed, self.device = cfg, seed, device
        self.pos = 0
        self._it = None

    def open(self) -> None:
        """Start the loader at the current position (creating a DataLoader iterator draws from torch's RNG)."""
        from fgdsr.data.sampler import make_train_loader

        pin = self.device.type == "cuda"
        self._it = iter(make_train_loader(self.cfg, self.seed, start_step=self.pos, pin_memory=pin))

    def next(self) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """-> (lr (N, C, h, w), targets: per-level HR (N, C, h*2^(l+1), w*2^(l+1)), coarse to fine) on device."""
        from fgdsr.data.sampler import make_pyramid

        if self._it is None:
            self.open()
        batch = next(self._it)
        self.pos += 1
        if self.cfg.pyramid_on == "device":
            return make_pyramid(batch.to(self.device, non_blocking=True), self.cfg.scale)
        lr, targets = batch
        if not isinstance(targets, (list, tuple)):
            targets = [targets]
        return lr.to(self.device, non_blocking=True), [t.to(self.device, non_blocking=True) for t in targets]

    def state(self) -> dict[str, Any]:
        return {"pos": self.pos, "seed": self.seed}

    def restore(self, state: dict[str, Any]) -> None:
        if int(state.get("seed", self.seed)) != self.seed:
            raise UserError(
                "training state: data seed differs from this run's (seed or process count changed)"
            )
        self.pos, self._it = int(state["pos"]), None


# ------------------------------------------------------------------------------------------- validation


def load_validation_pairs(cfg: TrainConfig) -> list[tuple[str, np.ndarray, np.ndarray, bool]]:
    """(name, LR, HR uint8 (h*s, w*s, 3), gray source?) for `cfg.val_dataset`, the literature's protocol.

    HR is modcropped to the scale; LR = MATLAB bicubic of the HR as float (fgdsr.metrics.protocol.make_lr).
    """
    from fgdsr.data.datasets import resolve_dataset
    from fgdsr.data.imresize import modcrop
    from fgdsr.metrics.protocol import make_lr

    ds = resolve_dataset(cfg.val_dataset, cfg.data_root).subset(cfg.val_max_images)
    pairs = []
    for i, name in enumerate(ds.names):
        hr = np.ascontiguousarray(modcrop(ds.image(i), cfg.scale))
        pairs.append((name, make_lr(hr, cfg.scale), hr, ds.is_gray(i)))
    if not pairs:
        raise UserError(
            f"config field 'val_dataset': '{cfg.val_dataset}' holds no image; name a data set with images"
        )
    return pairs


def validate(
    model: nn.Module, cfg: TrainConfig, pairs: list, device: torch.device, keep: int = 0
) -> tuple[dict[str, float], list[ValSample]]:
    """Mean Y-PSNR (dB) / SSIM (after uint8, shave = scale) of `model` (an SRModel) over `pairs`;
    -> (metrics, the first `keep` images as ValSample)."""
    import torch

    from fgdsr.inference import ModelUpscaler
    from fgdsr.metrics.protocol import evaluate_pair

    was_training = model.training
    model.eval()
    upscaler = ModelUpscaler(model, cfg.scale, device)
    psnrs, ssims, samples = [], [], []
    with torch.no_grad():
        for name, lr, hr, gray in pairs:
            sr = upscaler(lr)
            p, s = evaluate_pair(sr, hr, cfg.scale, gray=gray)
            psnrs.append(float(p))
            ssims.append(float(s))
            if len(samples) < keep:
                samples.append(ValSample(name, lr, hr, sr))
    model.train(was_training)
    return {"val_psnr": sum(psnrs) / len(psnrs), "val_ssim": sum(ssims) / len(ssims)}, samples


# ------------------------------------------------------------------------------------------- parts of the loop


class _TrainForward:
    """Build an nn.Module whose forward is `model.forward_train`, so DDP (multi-GPU) sees the training graph."""

    @staticmethod
    def wrap(model: nn.Module) -> nn.Module:
        from torch import nn

        class TrainForward(nn.Module):
            def __init__(self, inner: nn.Module) -> None:
                super().__init__()
                self.inner = inner

            def forward(self, lr, targets):
                return self.inner.forward_train(lr, targets)

        return TrainForward(model)


def _target_device(cpu: bool) -> torch.device:
    """The device Accelerate will pick (its default order: CUDA of this local rank, MPS, CPU)."""
    import os

    import torch

    if not cpu and torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")) % torch.cuda.device_count())
    if not cpu and getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def resolve_precision(cfg: TrainConfig, cpu: bool = False) -> PrecisionChoice:
    """`cfg.precision` resolved for the device this process will train on (one-line UserError if impossible)."""
    from fgdsr.precision import choose_precision, device_caps

    return choose_precision(cfg.precision, device_caps(_target_device(cpu)))


def make_accelerator(cfg: TrainConfig, cpu: bool = False):
    """An `accelerate.Accelerator` with `cfg.precision` resolved for this device (cpu=True: force the CPU).

    The orchestrator's trials call it too, so a trial and `fgdsr train` make the same choice.
    """
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState

    mixed = resolve_precision(cfg, cpu).accelerate
    try:
        return Accelerator(cpu=cpu, mixed_precision=mixed)
    except ValueError as e:
        if "already been initialized" not in str(e):
            raise UserError(f"config field 'precision': '{cfg.precision}' is not available here ({e})") from e
    # an earlier run in this process (tests, a notebook, a Tune worker) set other precision flags: start over
    AcceleratorState._reset_state(reset_partial_state=True)
    return Accelerator(cpu=cpu, mixed_precision=mixed)


def _used_precision(cfg: TrainConfig, accelerator, made_here: bool) -> PrecisionChoice:
    from fgdsr.precision import PrecisionChoice, from_accelerate

    if made_here:
        return resolve_precision(cfg, accelerator.device.type == "cpu")
    name = from_accelerate(accelerator.mixed_precision)
    return PrecisionChoice(
        name, accelerator.mixed_precision, accelerator.scaler is not None, "the caller's Accelerator"
    )


def make_ema(model: nn.Module, cfg: TrainConfig, device: torch.device):
    """The EMA copy (torch AveragedModel, EMA of parameters and buffers), or None when cfg.ema_decay == 0.

    Its first `update_parameters` copies the weights; each later one is ema = decay * ema + (1 - decay) * w.
    """
    if cfg.ema_decay <= 0:
        return None
    from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

    ema = AveragedModel(
        model, device=device, multi_avg_fn=get_ema_multi_avg_fn(cfg.ema_decay), use_buffers=True
    )
    return ema.requires_grad_(False)


@contextlib.contextmanager
def _compile_errors(enabled: bool):
    """With `compile`, a torch.compile failure (raised by the first forward or backward) as one line.

    Seen here: torch 2.13's inductor fails on the FD model's backward on a CPU with two threads (a vectorised
    atomic-add store, InductorError); one thread and the l1 model compile.
    """
    if not enabled:
        yield
        return
    try:
        yield
    except Exception as e:
        if not type(e).__module__.startswith(("torch._dynamo", "torch._inductor")):
            raise
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:160]
        raise UserError(
            f"config field 'compile': torch.compile failed for this model on this device ({type(e).__name__}: "
            f"{first}); train with compile: false"
        ) from e


def _check_resume_config(saved: TrainConfig, cfg: TrainConfig, path: Path) -> None:
    a, b = saved.to_dict(), cfg.to_dict()
    diff = [k for k in a if k not in RESUMABLE_CHANGES and a[k] != b.get(k)]
    if diff:
        shown = ", ".join(f"{k}: {a[k]!r} -> {b[k]!r}" for k in diff[:3])
        raise UserError(
            f"{path}/config.json: cannot resume with a different config ({shown}); "
            f"only {', '.join(RESUMABLE_CHANGES)} may change, or start a new --out"
        )


def _call(callbacks, hook: str, *args) -> bool:
    stop = False
    for cb in callbacks:
        fn = getattr(cb, hook, None)
        if fn is not None and fn(*args):
            stop = True
    return stop


def _broadcast(obj: Any) -> Any:
    """The main process's `obj` on every process (picklable Python values; only with several processes)."""
    from accelerate.utils import broadcast_object_list

    return broadcast_object_list([obj], from_process=0)[0]


# ------------------------------------------------------------------------------------------- the loop


def train(
    cfg: TrainConfig,
    out_dir: str | Path,
    callbacks: tuple | list = (),
    resume: bool = False,
    accelerator=None,
    progress: bool = True,
    meta: dict[str, Any] | None = None,
    handle_signals: bool = False,
) -> TrainResult:
    """Train `cfg` into `out_dir` (checkpoints `out_dir/best`, `out_dir/last`); -> TrainResult.

    resume: continue from `out_dir/last` (weights, EMA, optimizer, RNG, loader position, history).
    accelerator: an `accelerate.Accelerator` to use (the orchestrator may pass `Accelerator(cpu=True)`);
    None creates one with `make_accelerator(cfg)`.
    meta: extra keys written into every checkpoint's meta.json (for example {"mlflow_run_id": ...}).
    handle_signals: SIGTERM / SIGINT write a training checkpoint at the next step boundary and return with
    `preempted` set (main thread only; fgdsr/preemption.py).
    """
    from fgdsr.preemption import StopSignals

    # installed for the whole run: a signal during the set-up is answered at the first step boundary
    with StopSignals() if handle_signals else contextlib.nullcontext() as signals:
        return _run(cfg, Path(out_dir), callbacks, resume, accelerator, progress, meta, signals)


def _run(cfg, out: Path, callbacks, resume: bool, accelerator, progress: bool, meta, signals) -> TrainResult:
    """The body of `train` (signals: an active StopSignals or None)."""
    import torch
    from accelerate.utils import set_seed

    from fgdsr import checkpoint as ck
    from fgdsr.losses import build_loss
    from fgdsr.models import build_model

    t_start = time.perf_counter()
    last_dir, best_dir = out / RESUME_DIR, out / BEST_DIR
    if resume and not (last_dir / ck.TRAINING_STATE).is_file():
        raise UserError(f"{last_dir}: no training checkpoint to resume; run without --resume first")
    made_here = accelerator is None
    accelerator = accelerator or make_accelerator(cfg)
    precision = _used_precision(cfg, accelerator, made_here)
    main = accelerator.is_main_process
    device = accelerator.device

    # --- model, loss, optimizer (seeded: the same init on every process and every run)
    set_seed(cfg.seed)
    model = build_model(cfg)
    loss_fn = build_loss(cfg)
    if hasattr(loss_fn, "to"):
        loss_fn = loss_fn.to(device)
    provenance: dict[str, Any] = {"train_dataset": cfg.train_dataset}
    state = None
    if resume:
        _check_resume_config(ck.read_config(last_dir), cfg, last_dir)
        state = ck.load_training_state(last_dir)
        saved = ck.read_weights(last_dir)  # the EMA weights when EMA is on (what evaluation reads)
        if "train_weights" in state:
            ck.load_state_strict(model, state["train_weights"], last_dir / ck.TRAINING_STATE)
        else:
            ck.load_state_strict(model, saved, last_dir / ck.WEIGHTS)
        provenance = dict(ck.read_meta(last_dir).get("provenance", provenance))
    elif cfg.init_from:
        report = ck.init_from_checkpoint(model, cfg.init_from)
        provenance["init_from"] = str(cfg.init_from)
        provenance["init_from_meta"] = ck.read_meta(cfg.init_from).get("provenance", {})
        provenance["init_kept"] = report["kept_init"]
    provenance["precision"] = precision.name
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    # Parameter groups come from the model (fgdsr.models.fgd.SRModel.optim_groups): the Class-Module is its own
    # group (its own Adam eps and lr scale, docs/LOSS.md); every group's lr is lr_at(step) * its "lr_scale".
    groups = model.optim_groups()
    optimizer = torch.optim.Adam(groups, lr=lr_at(cfg, 0), weight_decay=cfg.weight_decay)
    wrapper = _TrainForward.wrap(model)
    wrapper, optimizer = accelerator.prepare(wrapper, optimizer)
    # compile: the model's training forward (and its backward, through AOTAutograd); the loss, which turns its
    # terms into Python floats, and Adam stay eager. The compiled module shares the parameters of `model`.
    forward = torch.compile(wrapper) if cfg.compile else wrapper
    ema = make_ema(model, cfg, device)

    # --- data: a different stream per process (random patches are i.i.d.; no sharding needed)
    stream = BatchStream(cfg, cfg.seed + 1_000_003 * accelerator.process_index, device)
    step, best_psnr, best_step, history = 0, None, None, []
    if state is not None:
        optimizer.load_state_dict(state["optimizer"])
        step = int(state["step"])
        extra = state.get("extra", {})
        best_psnr, best_step = extra.get("best_psnr"), extra.get("best_step")
        history = list(extra.get("history", []))
        if ema is not None and int(extra.get("ema_averaged", 0)) > 0:
            ck.load_state_strict(ema.module, saved, last_dir / ck.WEIGHTS)
            ema.n_averaged.fill_(int(extra["ema_averaged"]))
        if accelerator.scaler is not None and "scaler" in extra:
            accelerator.scaler.load_state_dict(extra["scaler"])
        stream.restore(state["loader"])
        stream.open()  # before the RNG restore: the saved state already includes the original run's opening
        ck.restore_rng_state(state["rng"])  # python/numpy/torch exactly as saved

    val_pairs = load_validation_pairs(cfg) if main else []
    run_meta = dict(meta or {})
    last_saved = step if state is not None else None  # the step of the training checkpoint in last/
    want_samples = any(hasattr(cb, "on_val_samples") for cb in callbacks)

    def eval_model() -> nn.Module:
        """What validation, best/ and last/ use: the EMA copy once it has started, else the weights."""
        return ema.module if ema is not None and int(ema.n_averaged) > 0 else model

    def save(path: Path, metrics: dict[str, float], training: bool) -> Path:
        nonlocal last_saved
        info = {**run_meta, "step": step, "metrics": metrics, "provenance": provenance}
        if not training:
            return ck.save_model_checkpoint(path, eval_model(), cfg, info)
        extra = {"best_psnr": best_psnr, "best_step": best_step, "history": history}
        if ema is not None:
            extra["ema_averaged"] = int(ema.n_averaged)
        if accelerator.scaler is not None:
            extra["scaler"] = accelerator.scaler.state_dict()
        raw = model if ema is not None else None
        last_saved = step
        return ck.save_training_checkpoint(
            path, eval_model(), cfg, info, optimizer, stream.state(), extra, raw
        )

    def run_validation() -> tuple[dict[str, float], bool]:
        """Validate and write best/last on the main process, share the metrics, fire the callbacks on all."""
        nonlocal best_psnr, best_step
        improved = False
        metrics: dict[str, float] = {}
        samples: list[ValSample] = []
        if main:
            keep = VAL_SAMPLES if want_samples else 0
            metrics, samples = validate(eval_model(), cfg, val_pairs, device, keep)
            improved = best_psnr is None or metrics["val_psnr"] > best_psnr
            if improved:
                best_psnr, best_step = metrics["val_psnr"], step
            metrics["best_val_psnr"] = best_psnr
            history.append({"step": step, **metrics})
            if improved:
                save(best_dir, metrics, training=False)
            save(last_dir, metrics, training=True)
        if accelerator.num_processes > 1:
            metrics, improved = _broadcast((metrics, improved))
        stop = _call(callbacks, "on_validation", step, metrics)
        if samples:
            stop |= _call(callbacks, "on_val_samples", step, samples)
        stop |= _call(callbacks, "on_checkpoint", step, last_dir)
        if improved:
            stop |= _call(callbacks, "on_checkpoint", step, best_dir)
        return metrics, stop

    info = StartInfo(step, precision, str(device), resume, accelerator.num_processes, main)
    stop = _call(callbacks, "on_start", info)
    bar = _Progress(cfg.max_steps, step, enabled=progress and main)
    if cfg.init_from and not resume and step == 0:
        metrics, s = run_validation()  # the starting point of a fine-tuning run is a result too
        stop |= s
        bar.val(metrics["val_psnr"])

    # --- the loop
    wrapper.train()
    sums: dict[str, float] = {}
    n_sums, t_log, step_log = 0, time.perf_counter(), step
    preempted = None
    while step < cfg.max_steps and not stop:
        lr_now = lr_at(cfg, step)
        for group in optimizer.param_groups:
            group["lr"] = lr_now * group.get("lr_scale", 1.0)
        for micro in range(cfg.grad_accum):
            lr_batch, targets = stream.next()
            if cfg.channels_last:
                lr_batch = lr_batch.contiguous(memory_format=torch.channels_last)
            sync = micro == cfg.grad_accum - 1
            with (
                accelerator.no_sync(wrapper) if not sync else contextlib.nullcontext(),
                _compile_errors(cfg.compile),
            ):
                with accelerator.autocast():
                    output = forward(lr_batch, targets)
                    total, terms = loss_fn(output, targets, step)
                accelerator.backward(total / cfg.grad_accum)
            for k, v in terms.items():
                sums[k] = sums.get(k, 0.0) + float(v) / cfg.grad_accum
        if not math.isfinite(float(total.detach())):
            raise UserError(
                f"training diverged at step {step} (loss {float(total)}); lower 'lr' or try precision: fp32"
            )
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        step += 1
        n_sums += 1
        if ema is not None and step > cfg.ema_start:
            ema.update_parameters(model)

        if step % cfg.log_every == 0 or step == cfg.max_steps:
            now = time.perf_counter()
            logs = {k: v / n_sums for k, v in sums.items()}
            logs["lr"] = lr_now
            logs["it_per_s"] = (step - step_log) / max(now - t_log, 1e-9)
            sums, n_sums, t_log, step_log = {}, 0, now, step
            bar.log(step, logs)
            stop |= _call(callbacks, "on_step", step, logs)
            if accelerator.num_processes > 1:
                stop = _broadcast(stop)  # the main process decides for all
        else:
            bar.advance(step)
        if step % cfg.val_every == 0 or step == cfg.max_steps or stop:
            metrics, s = run_validation()
            stop |= s
            if accelerator.num_processes > 1:
                stop = _broadcast(stop)
            bar.val(metrics["val_psnr"])
        if signals is not None:  # a step boundary: the place to answer SIGTERM / SIGINT
            preempted = _broadcast(signals.received) if accelerator.num_processes > 1 else signals.received
            if preempted:
                break
    bar.close()
    if preempted:  # a complete training checkpoint at this step (a validation step has written it already)
        if main and last_saved != step:
            save(last_dir, {}, training=True)
        accelerator.wait_for_everyone()
        _call(callbacks, "on_checkpoint", step, last_dir)

    if main and not (last_dir / ck.TRAINING_STATE).is_file():
        save(last_dir, {}, training=True)  # max_steps reached before any validation (resume past the end)
    accelerator.wait_for_everyone()
    return TrainResult(
        out_dir=out,
        last_checkpoint=last_dir,
        best_checkpoint=best_dir if best_dir.is_dir() else None,
        best_val_psnr=best_psnr,
        best_step=best_step,
        final_step=step,
        history=history,
        wall_time_s=time.perf_counter() - t_start,
        stopped_early=bool(stop or preempted) and step < cfg.max_steps,
        preempted=preempted,
        precision=precision.name,
    )


# ------------------------------------------------------------------------------------------- progress


class _Progress:
    """A rich progress bar: step, loss terms, it/s, last validation PSNR. A no-op when disabled."""

    def __init__(self, total: int, start: int, enabled: bool) -> None:
        self.enabled = enabled
        self.info = {"loss": "", "val": ""}
        if not enabled:
            return
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self.p = Progress(
            TextColumn("[bold]train"),
            BarColumn(bar_width=20),
            MofNCompleteColumn(),
            TimeRemainingColumn(),
            TextColumn("{task.fields[info]}"),
            transient=False,
        )
        self.p.start()
        self.task = self.p.add_task("train", total=total, completed=start, info="")

    def _render(self, step: int) -> None:
        if self.enabled:
            text = "  ".join(v for v in (self.info["loss"], self.info["val"]) if v)
            self.p.update(self.task, completed=step, info=text)

    def advance(self, step: int) -> None:
        self._render(step)

    def log(self, step: int, logs: dict[str, float]) -> None:
        shown = [
            k for k in ("loss", "l_r", "l_c1", "l_c2", "bin_acc") if k in logs
        ]  # the rest goes to callbacks
        terms = " ".join(f"{k}={logs[k]:.4g}" for k in shown)
        self.info["loss"] = f"{terms} lr={logs['lr']:.1e} {logs['it_per_s']:.2f} it/s"
        self._render(step)

    def val(self, psnr: float) -> None:
        self.info["val"] = f"val {psnr:.2f} dB"

    def close(self) -> None:
        if self.enabled:
            self.p.stop()
