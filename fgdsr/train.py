"""Training: one `TrainConfig` -> best and last checkpoints. A flat loop (nanoGPT style) on Accelerate.

    result = train(load_config("fgdsr/configs/tiny.yaml"), "runs/tiny")

Accelerate does device placement, mixed precision (`cfg.mixed_precision`) and multi-GPU (`accelerate launch
-m orchestrator train ...`); gradient accumulation is written out by hand (`cfg.grad_accum` micro-batches per
optimizer step, gradient sync only on the last one). One "step" is one optimizer update.

Determinism: the model is initialised after seeding; the training batches come from the endless
`make_train_loader(cfg, seed, start_step)` whose samples are pure functions of (seed, index), with a seed
derived from (cfg.seed, process index); the training state stores the data position (batches taken) and every
RNG state (python, numpy, torch, CUDA). N + N steps with a resume are bit-identical to 2N steps on CPU
(tests/test_train.py).

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

RESUME_DIR = "last"  # train(resume=True) continues from out_dir / RESUME_DIR (a training checkpoint)
BEST_DIR = "best"
# Fields that may change between a run and its resume (they do not change the trajectory up to the saved step).
RESUMABLE_CHANGES = ("max_steps", "val_every", "val_max_images", "log_every", "workers", "data_root")


class Callback:
    """Hooks for the orchestrator (Ray Tune, MLflow). All optional (duck typing: any object with some of them).

    Called on every process (Ray Train's report is a barrier on all workers); checkpoints are written by the
    main process only, so `path` exists there. Order at a validation step: the checkpoints are written, then
    `on_validation(step, metrics)`, then `on_checkpoint(step, out_dir/last)` and, when the PSNR improved,
    `on_checkpoint(step, out_dir/best)`. A hook that returns True asks the loop to stop after this step
    (decided on the main process; the last checkpoint is still written).
    """

    def on_step(self, step: int, logs: dict[str, float]) -> bool | None:
        """Every `cfg.log_every` steps and at the last step: mean loss terms since the previous call, lr, it/s."""

    def on_validation(self, step: int, metrics: dict[str, float]) -> bool | None:
        """Every `cfg.val_every` steps and at the end: val_psnr (dB), val_ssim, best_val_psnr."""

    def on_checkpoint(self, step: int, path: Path) -> bool | None:
        """After a complete checkpoint directory has been written (`out_dir/last` or `out_dir/best`)."""


@dataclass
class TrainResult:
    """What `train` returns. Paths are checkpoint directories; PSNR in dB (Y channel, shave = scale)."""

    out_dir: Path
    last_checkpoint: Path
    best_checkpoint: Path | None
    best_val_psnr: float | None
    best_step: int | None
    final_step: int
    history: list[dict[str, float]] = field(default_factory=list)
    wall_time_s: float = 0.0
    stopped_early: bool = False


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
    re-opens the stream at that batch, with no replay.
    """

    def __init__(self, cfg: TrainConfig, seed: int, device: torch.device) -> None:
        self.cfg, self.seed, self.device = cfg, seed, device
        self.pos = 0
        self._it = None

    def open(self) -> None:
        """Start the loader at the current position (creating a DataLoader iterator draws from torch's RNG)."""
        from fgdsr.data.sampler import make_train_loader

        self._it = iter(make_train_loader(self.cfg, self.seed, start_step=self.pos))

    def next(self) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """-> (lr (N, C, h, w), targets: per-level HR (N, C, h*2^(l+1), w*2^(l+1)), coarse to fine) on device."""
        if self._it is None:
            self.open()
        lr, targets = next(self._it)
        self.pos += 1
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


def validate(model: nn.Module, cfg: TrainConfig, pairs: list, device: torch.device) -> dict[str, float]:
    """Mean Y-PSNR (dB) / SSIM (after uint8, shave = scale) of `model` (an SRModel) over `pairs`."""
    import torch

    from fgdsr.inference import ModelUpscaler
    from fgdsr.metrics.protocol import evaluate_pair

    was_training = model.training
    model.eval()
    upscaler = ModelUpscaler(model, cfg.scale, device)
    psnrs, ssims = [], []
    with torch.no_grad():
        for _name, lr, hr, gray in pairs:
            sr = upscaler(lr)
            p, s = evaluate_pair(sr, hr, cfg.scale, gray=gray)
            psnrs.append(float(p))
            ssims.append(float(s))
    model.train(was_training)
    return {"val_psnr": sum(psnrs) / len(psnrs), "val_ssim": sum(ssims) / len(ssims)}


# ------------------------------------------------------------------------------------------- the loop


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


def _make_accelerator(cfg: TrainConfig):
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState

    try:
        return Accelerator(mixed_precision=cfg.mixed_precision)
    except ValueError as e:
        if "already been initialized" not in str(e):
            raise UserError(
                f"config field 'mixed_precision': '{cfg.mixed_precision}' is not available here ({e}); "
                "use 'no' or 'bf16'"
            ) from e
    # an earlier run in this process (tests, a notebook, a Tune worker) set other precision flags: start over
    AcceleratorState._reset_state(reset_partial_state=True)
    return Accelerator(mixed_precision=cfg.mixed_precision)


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


def train(
    cfg: TrainConfig,
    out_dir: str | Path,
    callbacks: tuple | list = (),
    resume: bool = False,
    accelerator=None,
    progress: bool = True,
    meta: dict[str, Any] | None = None,
) -> TrainResult:
    """Train `cfg` into `out_dir` (checkpoints `out_dir/best`, `out_dir/last`); -> TrainResult.

    resume: continue from `out_dir/last` (weights, optimizer, RNG, loader position, history).
    accelerator: an `accelerate.Accelerator` to use (the orchestrator may pass `Accelerator(cpu=True)`);
    None creates one with `cfg.mixed_precision`.
    meta: extra keys written into every checkpoint's meta.json (for example {"mlflow_run_id": ...}).
    """
    import torch
    from accelerate.utils import set_seed

    from fgdsr import checkpoint as ck
    from fgdsr.losses import build_loss
    from fgdsr.models import build_model

    t_start = time.perf_counter()
    out = Path(out_dir)
    last_dir, best_dir = out / RESUME_DIR, out / BEST_DIR
    if resume and not (last_dir / ck.TRAINING_STATE).is_file():
        raise UserError(f"{last_dir}: no training checkpoint to resume; run without --resume first")
    accelerator = accelerator or _make_accelerator(cfg)
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
        ck.load_state_strict(model, ck.read_weights(last_dir), last_dir / ck.WEIGHTS)
        state = ck.load_training_state(last_dir)
        provenance = dict(ck.read_meta(last_dir).get("provenance", provenance))
    elif cfg.init_from:
        report = ck.init_from_checkpoint(model, cfg.init_from)
        provenance["init_from"] = str(cfg.init_from)
        provenance["init_from_meta"] = ck.read_meta(cfg.init_from).get("provenance", {})
        provenance["init_kept"] = report["kept_init"]
    # Parameter groups come from the model (fgdsr.models.fgd.SRModel.optim_groups): the Class-Module is its own
    # group (its own Adam eps and lr scale, docs/LOSS.md); every group's lr is lr_at(step) * its "lr_scale".
    groups = model.optim_groups()
    optimizer = torch.optim.Adam(groups, lr=lr_at(cfg, 0), weight_decay=cfg.weight_decay)
    wrapper = _TrainForward.wrap(model)
    wrapper, optimizer = accelerator.prepare(wrapper, optimizer)

    # --- data: a different stream per process (random patches are i.i.d.; no sharding needed)
    stream = BatchStream(cfg, cfg.seed + 1_000_003 * accelerator.process_index, device)
    step, best_psnr, best_step, history = 0, None, None, []
    if state is not None:
        optimizer.load_state_dict(state["optimizer"])
        step = int(state["step"])
        extra = state.get("extra", {})
        best_psnr, best_step = extra.get("best_psnr"), extra.get("best_step")
        history = list(extra.get("history", []))
        stream.restore(state["loader"])
        stream.open()  # before the RNG restore: the saved state already includes the original run's opening
        ck.restore_rng_state(state["rng"])  # python/numpy/torch exactly as saved

    val_pairs = load_validation_pairs(cfg) if main else []
    run_meta = dict(meta or {})

    def save(path: Path, metrics: dict[str, float], training: bool) -> Path:
        info = {**run_meta, "step": step, "metrics": metrics, "provenance": provenance}
        unwrapped = accelerator.unwrap_model(wrapper).inner
        if not training:
            return ck.save_model_checkpoint(path, unwrapped, cfg, info)
        extra = {"best_psnr": best_psnr, "best_step": best_step, "history": history}
        return ck.save_training_checkpoint(path, unwrapped, cfg, info, optimizer, stream.state(), extra)

    def run_validation() -> tuple[dict[str, float], bool]:
        """Validate and write best/last on the main process, share the metrics, fire the callbacks on all."""
        nonlocal best_psnr, best_step
        improved = False
        metrics: dict[str, float] = {}
        if main:
            metrics = validate(accelerator.unwrap_model(wrapper).inner, cfg, val_pairs, device)
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
        stop |= _call(callbacks, "on_checkpoint", step, last_dir)
        if improved:
            stop |= _call(callbacks, "on_checkpoint", step, best_dir)
        return metrics, stop

    bar = _Progress(cfg.max_steps, step, enabled=progress and main)
    stop = False
    if cfg.init_from and not resume and step == 0:
        metrics, stop = run_validation()  # the starting point of a fine-tuning run is a result too
        bar.val(metrics["val_psnr"])

    # --- the loop
    wrapper.train()
    sums: dict[str, float] = {}
    n_sums, t_log, step_log = 0, time.perf_counter(), step
    while step < cfg.max_steps and not stop:
        lr_now = lr_at(cfg, step)
        for group in optimizer.param_groups:
            group["lr"] = lr_now * group.get("lr_scale", 1.0)
        for micro in range(cfg.grad_accum):
            lr_batch, targets = stream.next()
            sync = micro == cfg.grad_accum - 1
            with accelerator.no_sync(wrapper) if not sync else contextlib.nullcontext():
                with accelerator.autocast():
                    output = wrapper(lr_batch, targets)
                    total, terms = loss_fn(output, targets, step)
                accelerator.backward(total / cfg.grad_accum)
            for k, v in terms.items():
                sums[k] = sums.get(k, 0.0) + float(v) / cfg.grad_accum
        if not math.isfinite(float(total.detach())):
            raise UserError(
                f"training diverged at step {step} (loss {float(total)}); lower 'lr' or try mixed_precision: no"
            )
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        step += 1
        n_sums += 1

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
    bar.close()

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
        stopped_early=stop and step < cfg.max_steps,
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
