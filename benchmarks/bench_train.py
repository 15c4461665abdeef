"""Training step time per loss variant (l1, cs, fd, aux) and the data loader alone.

    .venv/bin/python benchmarks/bench_train.py                 # batch 64, HR 128, x4, LapSRN (depth 10, 64 ch)
    .venv/bin/python benchmarks/bench_train.py --steps 3 --device cuda --mixed-precision bf16

One step = forward_train + loss + backward + Adam update on a fixed random batch (the loader is timed
separately, so the ratio isolates the model/loss cost). Variants are interleaved round-robin (each round runs
every variant once) so slow drifts of a shared machine hit all of them alike; the median over rounds is
reported, and fd/l1 is the ratio of medians (target <= 1.15, issue 3). Prints a Markdown table + JSON line.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from datetime import datetime, timezone

import torch

from fgdsr.config import TrainConfig, load_config
from fgdsr.losses import build_loss
from fgdsr.models import build_model

VARIANTS = ("l1", "cs", "fd", "aux")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def make_step(cfg: TrainConfig, device: torch.device, batch: int, patch: int, amp: str):
    """A closure running one training step on a fixed batch; -> callable returning the loss value."""
    torch.manual_seed(0)
    model = build_model(cfg).to(device).train()
    loss_fn = build_loss(cfg).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    s = cfg.scale
    levels = {2: 1, 4: 2, 8: 3}[s]
    hr = torch.rand(batch, 1, patch, patch, device=device)
    targets = [torch.nn.functional.avg_pool2d(hr, 2 ** (levels - 1 - i)) for i in range(levels)]
    lr = torch.nn.functional.avg_pool2d(hr, s)
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(amp)

    def step() -> float:
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            out = model.forward_train(lr, targets)
            total, _terms = loss_fn(out, targets, 10_000)
        total.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return float(total.detach())

    return step


def bench_variants(args, device: torch.device) -> dict[str, list[float]]:
    steps = {}
    for v in VARIANTS:
        cfg = TrainConfig().replace(loss=v, scale=4, batch_size=args.batch, patch_size=args.patch)
        steps[v] = make_step(cfg, device, args.batch, args.patch, args.mixed_precision)
        steps[v]()  # warm-up (allocator, oneDNN/cuDNN algorithm choice)
        _sync(device)
    times: dict[str, list[float]] = {v: [] for v in VARIANTS}
    for _ in range(args.steps):
        for v in VARIANTS:
            _sync(device)
            t0 = time.perf_counter()
            steps[v]()
            _sync(device)
            times[v].append(time.perf_counter() - t0)
    return times


def bench_loader(args) -> dict[str, float]:
    from fgdsr.data.sampler import make_train_loader

    cfg = load_config(
        None,
        {
            "batch_size": args.batch,
            "patch_size": args.patch,
            "workers": args.workers,
            "train_dataset": args.dataset,
            "random_downscale": True,  # LapSRN's augmentation (the costlier path: a bicubic resize per sample)
        },
    )
    it = iter(make_train_loader(cfg, 0))
    next(it)  # start-up (image decode / cache)
    t0 = time.perf_counter()
    n = 0
    for _ in range(args.loader_batches):
        try:
            next(it)
        except StopIteration:
            it = iter(make_train_loader(cfg, n + 1))
            next(it)
        n += 1
    dt = (time.perf_counter() - t0) / n
    return {"loader_s_per_batch": dt, "loader_batches": n, "workers": args.workers, "dataset": args.dataset}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--patch", type=int, default=128, help="HR patch side")
    ap.add_argument("--steps", type=int, default=3, help="timed rounds (each runs every variant once)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--mixed-precision", default="no", choices=["no", "bf16", "fp16"])
    ap.add_argument("--loader-batches", type=int, default=5)
    ap.add_argument("--workers", type=int, default=0)
    ap.add_argument("--dataset", default="builtin-train")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    t_all = time.perf_counter()
    times = bench_variants(args, device)
    med = {v: statistics.median(t) for v, t in times.items()}
    loader = bench_loader(args)
    dev_name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"
    print(
        f"# bench_train  {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC  device={device} ({dev_name}), "
        f"threads={torch.get_num_threads()}, batch {args.batch}, HR {args.patch}, x4, amp={args.mixed_precision}"
    )
    print("| variant | median step (s) | all steps (s) | ratio to l1 |")
    print("|---|---|---|---|")
    for v in VARIANTS:
        runs = ", ".join(f"{t:.2f}" for t in times[v])
        print(f"| {v} | {med[v]:.3f} | {runs} | {med[v] / med['l1']:.3f} |")
    print(
        f"loader alone: {loader['loader_s_per_batch']:.3f} s/batch ({loader['dataset']}, workers={args.workers})"
    )
    print(
        json.dumps(
            {
                "median_s": med,
                "fd_over_l1": med["fd"] / med["l1"],
                **loader,
                "wall_s": time.perf_counter() - t_all,
                "device": str(device),
                "threads": torch.get_num_threads(),
            }
        )
    )


if __name__ == "__main__":
    main()
