"""Training step time per variant (any list of `--set` configs), the data paths alone, and the real loop.

    .venv/bin/python benchmarks/bench_train.py       # l1, cs, fd, aux: batch 64, HR 128, x4, LapSRN (depth 10, 64 ch)
    .venv/bin/python benchmarks/bench_train.py --variant l1 --variant "l1+compile:compile=true" \\
        --variant "l1+cl:channels_last=true" --batch 16          # compile / channels_last against eager
    .venv/bin/python benchmarks/bench_train.py --variant l1 --variant fd --variant "fd-window:loss=fd,fgd_head=window"
    .venv/bin/python benchmarks/bench_train.py --device cuda --set precision=auto --loader
    .venv/bin/python benchmarks/bench_train.py --e2e 30 --variant "l1:pyramid_on=device" --workers 6 --device cuda

A variant is `NAME[:field=value,field=value...]` over TrainConfig fields (commas inside [...] belong to the value);
a bare l1 / cs / fd / aux means `loss=NAME`. `--set` applies to every variant.

Step mode (default): one step = forward_train + loss + backward + Adam update on a fixed random batch, built as
fgdsr.train builds it (channels_last, compile of the training forward, autocast + gradient scaler per
`precision`), without the loader, so the ratios isolate the model and loss. Variants are interleaved round-robin
(each round runs every variant once) so slow drifts of a shared machine hit all of them alike; the median over
rounds is reported, and fd/l1 is the ratio of medians (target <= 1.15 on CPU, issue 11).

--loader: the two data paths alone, one process on one thread (patches per CPU-second = per core): `loader` (each sample is
LR + targets, made by the worker) and `device` (each sample is the HR patch; the batch's LR + targets are made by
`make_pyramid` on --device, timed separately), and the step rate one core of each can feed (patches/s / batch).

--e2e STEPS: the real loop (`fgdsr.train.train`, loader workers, validation only at the end) per variant on
--dataset; steady-state steps/s over STEPS steps after --warmup. --barrier DIR --barrier-n K: K processes (packed
trials) wait for each other after their warm-up and then time the same --seconds wall-clock window.

Every run prints the load average (os.getloadavg) before and after: on a shared machine it says how much the
numbers can be trusted. Prints a Markdown table and one JSON line.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import re
import statistics
import time
from datetime import datetime, timezone
from pathlib import Path

import torch

from fgdsr.config import TrainConfig, apply_overrides, parse_set_args
from fgdsr.losses import build_loss
from fgdsr.models import build_model

DEFAULT_VARIANTS = ("l1", "cs", "fd", "aux")
LOSSES = ("l1", "cs", "fd", "aux")


def parse_variant(spec: str) -> tuple[str, dict[str, str]]:
    """`fd-window:loss=fd,fgd_head=window` -> ("fd-window", {...}); a bare loss name -> (name, {"loss": name})."""
    name, _, rest = spec.partition(":")
    items = [s for s in re.split(r",(?![^\[]*\])", rest) if s.strip()]  # no split inside [3,5,7]
    sets = parse_set_args(items)
    if name in LOSSES and "loss" not in sets:
        sets = {"loss": name, **sets}
    return name, sets


def variant_configs(args) -> dict[str, TrainConfig]:
    base = apply_overrides(
        TrainConfig(scale=4, batch_size=args.batch, patch_size=args.patch), parse_set_args(args.set)
    )
    return {
        name: apply_overrides(base, sets)
        for name, sets in map(parse_variant, args.variant or DEFAULT_VARIANTS)
    }


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def make_step(cfg: TrainConfig, device: torch.device):
    """A closure running one training step on a fixed batch, as fgdsr.train runs it; -> callable -> loss value."""
    from fgdsr.data.sampler import make_pyramid
    from fgdsr.precision import choose_precision, device_caps
    from fgdsr.train import _TrainForward

    torch.manual_seed(0)
    model = build_model(cfg).to(device).train()
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    forward = _TrainForward.wrap(model)
    forward = torch.compile(forward) if cfg.compile else forward
    loss_fn = build_loss(cfg).to(device)
    opt = torch.optim.Adam(model.optim_groups(), lr=1e-4)
    precision = choose_precision(cfg.precision, device_caps(device))
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision.name)
    scaler = torch.amp.GradScaler(device.type) if precision.grad_scaler else None
    hr = torch.rand(cfg.batch_size, 1, cfg.patch_size, cfg.patch_size, device=device)
    lr, targets = make_pyramid(hr, cfg.scale)
    if cfg.channels_last:
        lr = lr.contiguous(memory_format=torch.channels_last)

    def step() -> float:
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            out = forward(lr, targets)
            total, _terms = loss_fn(out, targets, 10_000)
        if scaler is not None:
            scaler.scale(total).backward()
            scaler.step(opt)
            scaler.update()
        else:
            total.backward()
            opt.step()
        opt.zero_grad(set_to_none=True)
        return float(total.detach())

    return step, precision.name


def bench_steps(cfgs: dict[str, TrainConfig], device: torch.device, rounds: int) -> dict:
    steps, precision, warm_s = {}, {}, {}
    for name, cfg in cfgs.items():
        steps[name], precision[name] = make_step(cfg, device)
        t0 = time.perf_counter()
        for _ in range(
            2 if cfg.compile else 1
        ):  # warm-up: allocator, algorithm choice, compilation (fwd + bwd)
            steps[name]()
        _sync(device)
        warm_s[name] = time.perf_counter() - t0
    times: dict[str, list[float]] = {v: [] for v in cfgs}
    for _ in range(rounds):
        for name in cfgs:
            _sync(device)
            t0 = time.perf_counter()
            steps[name]()
            _sync(device)
            times[name].append(time.perf_counter() - t0)
    return {"times": times, "precision": precision, "warmup_s": warm_s}


def bench_loader(cfg: TrainConfig, device: torch.device, samples: int) -> dict:
    """Both data paths, one process, one thread: patches per CPU-second (= per core, whatever else runs on the
    machine) and per wall-second, and the device-side pyramid per batch."""
    from fgdsr.data.sampler import TrainPatches, make_pyramid, one_thread

    out = {}
    for path in ("loader", "device"):
        ds = TrainPatches(cfg, 0, hr_only=path == "device")
        for i in range(4):
            ds[i]  # first samples: image cache, bicubic tables
        t0, c0 = time.perf_counter(), time.process_time()
        for i in range(samples):
            ds[1000 + i]
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        out[path] = {
            "patches_per_s_per_core": samples / cpu,
            "steps_per_s_per_core": samples / cpu / cfg.batch_size,
            "patches_per_wall_s": samples / wall,
        }
    hr = torch.stack([ds[i] for i in range(cfg.batch_size)]).to(device)
    make_pyramid(hr, cfg.scale)
    reps = 10
    with (
        one_thread() if device.type == "cpu" else contextlib.nullcontext()
    ):  # one core, as the loader's numbers
        _sync(device)
        t0, c0 = time.perf_counter(), time.process_time()
        for _ in range(reps):
            make_pyramid(hr, cfg.scale)
        _sync(device)
    out["device_pyramid_ms_per_batch"] = (time.perf_counter() - t0) / reps * 1e3
    out["device_pyramid_cpu_ms_per_batch"] = (time.process_time() - c0) / reps * 1e3
    return out


class _Window:
    """A training callback: after `warmup` steps (and the barrier), count steps over a window; stop after it."""

    def __init__(self, warmup: int, steps: int | None, seconds: float | None, barrier: tuple | None) -> None:
        self.warmup, self.steps, self.seconds, self.barrier = warmup, steps, seconds, barrier
        self.t0 = self.s0 = None
        self.rate = None

    def _wait(self) -> None:
        folder, n = self.barrier
        Path(folder).mkdir(parents=True, exist_ok=True)
        (Path(folder) / f"ready-{os.getpid()}").touch()
        while len(list(Path(folder).glob("ready-*"))) < n:
            time.sleep(0.05)

    def on_step(self, step: int, logs: dict) -> bool:
        now = time.perf_counter()
        if self.t0 is None:
            if step >= self.warmup:
                if self.barrier:
                    self._wait()
                self.t0, self.s0 = time.perf_counter(), step
            return False
        done = (self.steps is not None and step - self.s0 >= self.steps) or (
            self.seconds is not None and now - self.t0 >= self.seconds
        )
        if done:
            self.rate = (step - self.s0) / (now - self.t0)
        return done


def bench_e2e(cfgs: dict[str, TrainConfig], args) -> dict:
    import tempfile

    from fgdsr.train import make_accelerator, train

    cpu = torch.device(args.device).type == "cpu"
    out = {}
    for name, cfg in cfgs.items():
        steps = None if args.seconds else args.e2e
        window = _Window(
            args.warmup, steps, args.seconds, (args.barrier, args.barrier_n) if args.barrier else None
        )
        run = cfg.replace(
            train_dataset=args.dataset, workers=args.workers, max_steps=10**6, val_every=10**6, log_every=1,
            val_max_images=1, lr_schedule="step",
        )  # fmt: skip
        with tempfile.TemporaryDirectory() as tmp:
            res = train(
                run, tmp, callbacks=[window], accelerator=make_accelerator(run, cpu=cpu), progress=False
            )
        out[name] = {
            "steps_per_s": window.rate,
            "patches_per_s": window.rate * cfg.batch_size,
            "precision": res.precision,
            "pyramid_on": cfg.pyramid_on,
        }
    return out


def _header(args, device: torch.device, mode: str) -> str:
    dev = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"
    return (
        f"# bench_train {mode}  {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC  device={device} ({dev}), "
        f"torch {torch.__version__}, threads={torch.get_num_threads()}, batch {args.batch}, HR {args.patch}, x4, "
        f"--set {' '.join(args.set or []) or '-'}"
    )


def report_steps(res: dict, cfgs: dict[str, TrainConfig]) -> dict:
    med = {v: statistics.median(t) for v, t in res["times"].items()}
    ref = "l1" if "l1" in med else next(iter(med))
    print(f"| variant | precision | median step (s) | all steps (s) | warm-up (s) | ratio to {ref} |")
    print("|---|---|---|---|---|---|")
    for v, t in res["times"].items():
        runs = ", ".join(f"{x:.3f}" for x in t)
        print(
            f"| {v} | {res['precision'][v]} | {med[v]:.3f} | {runs} | {res['warmup_s'][v]:.1f} | "
            f"{med[v] / med[ref]:.3f} |"
        )
    out = {"median_s": med, "ratio_to": ref}
    if "fd" in med and "l1" in med:
        out["fd_over_l1"] = med["fd"] / med["l1"]
        print(f"fd/l1 training-step ratio: {out['fd_over_l1']:.3f} (target <= 1.15 on CPU)")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--variant", action="append", help="NAME[:field=value,...] (repeatable); default l1 cs fd aux"
    )
    ap.add_argument("--set", action="append", help="field=value for every variant (repeatable)")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--patch", type=int, default=128, help="HR patch side")
    ap.add_argument("--steps", type=int, default=3, help="timed rounds (each runs every variant once)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    ap.add_argument("--loader", action="store_true", help="also time the two data paths alone")
    ap.add_argument("--loader-only", action="store_true", help="only the data paths (no step timing)")
    ap.add_argument("--samples", type=int, default=64, help="patches timed per data path (--loader)")
    ap.add_argument("--dataset", default="builtin-train")
    ap.add_argument("--e2e", type=int, default=0, help="time STEPS steps of the real loop per variant")
    ap.add_argument("--seconds", type=float, default=None, help="--e2e: time a wall-clock window instead")
    ap.add_argument("--warmup", type=int, default=10, help="--e2e: steps before the window")
    ap.add_argument("--workers", type=int, default=0, help="--e2e: DataLoader workers")
    ap.add_argument(
        "--barrier", default=None, help="--e2e: folder of a file barrier between packed processes"
    )
    ap.add_argument("--barrier-n", type=int, default=1, help="--e2e: processes that meet at the barrier")
    ap.add_argument("--json", default=None, help="also write the JSON result to this file")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    cfgs = variant_configs(args)
    result: dict = {"device": str(device), "threads": torch.get_num_threads(), "load_before": _load()}
    t_all = time.perf_counter()
    if args.e2e or args.seconds:
        print(_header(args, device, f"e2e (workers={args.workers}, {args.dataset})"))
        result["e2e"] = bench_e2e(cfgs, args)
        print("| variant | data path | precision | steps/s | patches/s |")
        print("|---|---|---|---|---|")
        for v, r in result["e2e"].items():
            print(
                f"| {v} | {r['pyramid_on']} | {r['precision']} | {r['steps_per_s']:.2f} | {r['patches_per_s']:.0f} |"
            )
    elif not args.loader_only:
        print(_header(args, device, "steps"))
        result.update(report_steps(bench_steps(cfgs, device, args.steps), cfgs))
    if args.loader or args.loader_only:
        cfg = next(iter(cfgs.values())).replace(train_dataset=args.dataset)
        result["loader"] = ld = bench_loader(cfg, device, args.samples)
        rd = "on" if cfg.random_downscale else "off"
        print(f"data paths alone ({args.dataset}, random downscale {rd}, one process, one thread):")
        for path in ("loader", "device"):
            r = ld[path]
            print(
                f"  {path}: {r['patches_per_s_per_core']:.0f} patches per CPU-second (per core) -> feeds "
                f"{r['steps_per_s_per_core']:.2f} steps/s per core at batch {cfg.batch_size} "
                f"({r['patches_per_wall_s']:.0f} patches per wall-second)"
            )
        print(
            f"  device path's make_pyramid on {device}: {ld['device_pyramid_ms_per_batch']:.2f} ms per batch "
            f"({ld['device_pyramid_cpu_ms_per_batch']:.2f} ms of CPU time)"
        )
    result["load_after"] = _load()
    result["wall_s"] = time.perf_counter() - t_all
    print(f"load average (1, 5, 15 min): before {result['load_before']}, after {result['load_after']}")
    line = json.dumps(result)
    print(line)
    if args.json:
        Path(args.json).write_text(line + "\n")


if __name__ == "__main__":
    main()
