"""Upscale throughput (output megapixels per second) of `fgdsr upscale` per backend on the CPU, fp32.

The whole path of `fgdsr.upscale.upscale_array` is timed (Y conversion, the network on static-shape tiles,
bicubic CbCr, composition and rounding), for the same photo and tile plan on each backend; the time inside the
network (the tile runner's calls) is reported beside it. The tile graphs are exported (cached) in a warm-up run
that is not timed. Backends are interleaved per repeat, so drift of a shared machine hits them alike; the load
average is recorded with the result.

    .venv/bin/python benchmarks/bench_upscale.py [--configs tiny,lapsrn] [--lr-size 256x192] [--tile 128]
        [--overlap 16] [--repeats 3] [--threads N] [--backends torch,onnxruntime] [--json out.json]

Random weights (the cost does not depend on them); the photo is the middle of scikit-image's astronaut.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402


class TimedRunner:
    """A tile runner that adds up the seconds spent inside the wrapped runner."""

    def __init__(self, inner) -> None:
        self.inner, self.label, self.precision, self.seconds = inner, inner.label, inner.precision, 0.0

    def __call__(self, y):
        t0 = time.perf_counter()
        out = self.inner(y)
        self.seconds += time.perf_counter() - t0
        return out


def photo(lr_w: int, lr_h: int) -> np.ndarray:
    from PIL import Image

    from fgdsr.data.builtin import builtin_paths

    src = next(p for p in builtin_paths("builtin-eval") if p.stem == "astronaut")
    img = Image.open(src).convert("RGB")
    left, top = (img.width - lr_w) // 2, (img.height - lr_h) // 2
    return np.asarray(img.crop((left, top, left + lr_w, top + lr_h)))


def checkpoint(config: str, folder: Path) -> Path:
    import torch

    from fgdsr.checkpoint import save_model_checkpoint
    from fgdsr.config import load_config
    from fgdsr.models import build_model

    cfg = load_config(Path(__file__).resolve().parents[1] / "fgdsr" / "configs" / f"{config}.yaml", {})
    torch.manual_seed(0)
    return save_model_checkpoint(folder / config, build_model(cfg), cfg)


def measure(args) -> dict:
    import torch

    from fgdsr.upscale import TilePlan, upscale_array
    from trt.tile_runner import RunnerSpec, open_runners

    threads = args.threads or torch.get_num_threads()
    torch.set_num_threads(threads)
    lr_w, lr_h = (int(v) for v in args.lr_size.split("x"))
    img = photo(lr_w, lr_h)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for config in args.configs.split(","):
            ckpt = checkpoint(config, Path(tmp))
            runners = {}
            for backend in args.backends.split(","):
                opened = open_runners(RunnerSpec(ckpt, backend, "fp32", threads=threads))
                runners[backend] = (opened, TimedRunner(opened.runner))
            plan = TilePlan(args.tile, args.overlap, next(iter(runners.values()))[0].align)
            times = {b: [] for b in runners}
            net = {b: [] for b in runners}
            for _, timed in runners.values():  # warm-up: exports the tile graphs (cached), not timed
                upscale_array(timed, img, 4, plan=plan)
            for rep in range(args.repeats):
                order = list(runners) if rep % 2 == 0 else list(reversed(runners))
                for backend in order:
                    timed = runners[backend][1]
                    timed.seconds = 0.0
                    t0 = time.perf_counter()
                    upscale_array(timed, img, 4, plan=plan)
                    times[backend].append(time.perf_counter() - t0)
                    net[backend].append(timed.seconds)
            out_mp = lr_w * lr_h * 16 / 1e6
            for backend in runners:
                med = statistics.median(times[backend])
                rows.append({"config": config, "backend": backend, "precision": "fp32",
                             "output_mp": out_mp, "median_s": med, "mp_per_s": out_mp / med,
                             "network_share": statistics.median(net[backend]) / med,
                             "times_s": times[backend]})  # fmt: skip
                print(f"{config:7s} {backend:12s} {out_mp / med:7.3f} MP/s  (median {med:.2f} s, "
                      f"network {100 * statistics.median(net[backend]) / med:.0f} %)", flush=True)  # fmt: skip
    return {"rows": rows, "lr_size": args.lr_size, "tile": args.tile, "overlap": args.overlap,
            "repeats": args.repeats, "threads": threads, "machine": machine()}  # fmt: skip


def machine() -> dict:
    import onnxruntime
    import torch

    return {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
            "load_average": os.getloadavg(), "torch": torch.__version__, "onnxruntime": onnxruntime.__version__,
            "date": time.strftime("%Y-%m-%d %H:%M")}  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--configs", default="tiny,lapsrn")
    p.add_argument("--backends", default="torch,onnxruntime")
    p.add_argument("--lr-size", default="256x192")
    p.add_argument("--tile", type=int, default=128)
    p.add_argument("--overlap", type=int, default=16)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--json", default=None)
    args = p.parse_args()
    print(f"load average before: {os.getloadavg()}", flush=True)
    result = measure(args)
    print(f"load average after: {os.getloadavg()}")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
