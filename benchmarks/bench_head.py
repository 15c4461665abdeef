"""Why the FD head runs as it does at inference: the forms of its logits + argmax, timed eager and compiled.

The head alone (no trunk): F (1, 64, H, W) features, I (1, 1, H, W) image at the HR size, K output channels
(32 = fgd_head prior, 9 = window). Every form gives the same argmax (checked); only the memory traffic and the
kernels differ. `shipped` is `AnchorHead.infer` itself (eager: GEMM with the prior in the accumulator; traced:
conv + prior). The whole-model ratios, which decide, are `bench_latency.py`'s (docs/BENCHMARKS.md).

    .venv/bin/python benchmarks/bench_head.py [--hr-size 1280x720] [--threads 2] [--reps 4] [--no-compile]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from fgdsr.config import TrainConfig  # noqa: E402
from fgdsr.models import build_model  # noqa: E402
from fgdsr.models.fgd import channel_argmax, window_to_bin  # noqa: E402
from trt.shapes import parse_size  # noqa: E402


def conv_prior(feat, u, c, w, b):
    """NCHW 1x1 conv, then prior and argmax as separate ops (what `forward` computes for training)."""
    return channel_argmax(F.conv2d(feat, w[:, :, None, None], b) - (u - c).abs())


def gemm_acc(feat, u, c, w, b):
    """Channel-major GEMM with |u - c| - b in the accumulator (beta = -1): the shipped eager form."""
    n, ch, h, wd = feat.shape
    dist = (u.reshape(n, 1, h * wd) - c.view(1, -1, 1)).abs_().sub_(b.view(1, -1, 1))
    logits = dist.baddbmm_(w.view(1, -1, ch).expand(n, -1, -1), feat.flatten(2), beta=-1)
    return channel_argmax(logits).view(n, 1, h, wd)


def gemm_then_prior(feat, u, c, w, b):
    """Plain channel-major GEMM, then bias and prior subtracted (a compiler can fuse them into the argmax)."""
    n, ch, h, wd = feat.shape
    logits = torch.bmm(w.view(1, -1, ch).expand(n, -1, -1), feat.flatten(2)) + b.view(1, -1, 1)
    logits = logits - (u.reshape(n, 1, h * wd) - c.view(1, -1, 1)).abs()
    return channel_argmax(logits).view(n, 1, h, wd)


def pixel_major(feat, u, c, w, b):
    """Pixel-major GEMM on the NCHW features (a transposed operand): (H*W, C) @ (C, K), argmax over the last dim."""
    n, ch, h, wd = feat.shape
    dist = (u.reshape(n, h * wd, 1) - c.view(1, 1, -1)).abs_().sub_(b.view(1, 1, -1))
    logits = dist.baddbmm_(feat.flatten(2).transpose(1, 2), w.t().expand(n, -1, -1), beta=-1)
    return logits.max(dim=2).indices.view(n, 1, h, wd)


def prior_operands(mod, image):
    """(u, c, k0) with prior = |u - c| per channel: u = tau*pos(I), c = tau*(k + 0.5) (prior head) or u = tau*r,
    c = tau*d with r = pos(I) - k0 - 0.5 (window head; k0 = bin(I)); k0 None for the prior head."""
    tau = mod.log_tau.exp()
    pos = mod.grid.position(image)
    if mod.window:
        k0 = mod.grid.index_float(image)
        return tau * (pos - k0 - 0.5), tau * mod.deltas, k0
    return tau * pos, tau * mod.centres, None


FORMS = {"conv+prior": conv_prior, "gemm, prior in acc": gemm_acc, "gemm, then prior": gemm_then_prior,
         "pixel-major gemm": pixel_major}  # fmt: skip


def clock(fn, args, reps: int) -> tuple[float, torch.Tensor]:
    with torch.inference_mode():
        out = fn(*args)
        fn(*args)
        best = float("inf")
        for _ in range(reps):
            t0 = time.perf_counter()
            fn(*args)
            best = min(best, time.perf_counter() - t0)
    return best * 1e3, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hr-size", default="1280x720")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--reps", type=int, default=4)
    ap.add_argument("--no-compile", action="store_true")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    size = parse_size(args.hr_size, "--hr-size")
    width, height = size.width, size.height
    g = torch.Generator().manual_seed(0)
    feat = torch.randn(1, 64, height, width, generator=g).relu_()
    image = torch.rand(1, 1, height, width, generator=g)
    modes = ["eager"] if args.no_compile else ["eager", "compiled"]
    print(f"head alone, HR {width}x{height}, {torch.get_num_threads()} threads, torch {torch.__version__}; "
          "ms, min of reps")  # fmt: skip
    for head in ("prior", "window"):
        model = build_model(TrainConfig(loss="fd", fgd_head=head, depth=10, channels=64)).eval()
        mod = model.heads[str(model.levels - 1)]
        with torch.no_grad():
            mod.cls.weight.normal_(0, 0.1, generator=g)
            u, c, k0 = prior_operands(mod, image)
        w, b = mod.cls.weight.detach().flatten(1), mod.cls.bias.detach()
        ref = None
        for name, form in [*FORMS.items(), ("shipped (AnchorHead.infer)", None)]:
            fn = (lambda f, i, m=mod: m.infer(f, i)) if form is None else form
            fargs = (feat, image) if form is None else (feat, u, c, w, b)
            for mode in modes:
                run = torch.compile(fn, dynamic=False) if mode == "compiled" else fn
                ms, out = clock(run, fargs, args.reps)
                # compare absolute bins: the forms give the argmax channel, the shipped head the anchor
                if form is None:
                    out = mod.grid.index(out)
                else:
                    out = (
                        window_to_bin(out.float(), k0, mod.window, mod.bins).long() if k0 is not None else out
                    )
                ref = out if ref is None else ref
                agree = (out == ref).float().mean().item()
                print(f"  {head:6s} K={w.shape[0]:2d}  {name:28s} {mode:8s} {ms:8.1f}  (argmax agreement {agree:.5f})",
                      flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
