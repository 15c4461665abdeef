"""Bicubic evaluation speed: fgdsr (torch, cached bicubic tables, separable SSIM) vs a straightforward
NumPy/SciPy implementation of the same protocol, measured in one run on the same decoded images.

    .venv/bin/python benchmarks/bench_eval.py [--sets Set5 Set14 BSD200] [--scales 2 3 4] [--max-images N]
    .venv/bin/python benchmarks/bench_eval.py --variants   # PSNR/SSIM of the protocol variants (no timing)

Protocol (both sides): HR uint8 -> modcrop -> LR = MATLAB bicubic of the HR as double (float) -> SR = bicubic
x s -> uint8 (round half up, clip) -> Y (MATLAB uint8 rgb2ycbcr; single-channel files: the gray value)
-> shave s -> PSNR / SSIM (11x11 Gaussian, valid) + HR entropy. The reference computes each bicubic
axis by gathering the taps per output pixel (the usual vectorised port of MATLAB's imresizemex) and SSIM
with `scipy.ndimage.correlate` and the 2-D window (MATLAB's `filter2(window, img, 'valid')`).
Both run single-threaded (torch and BLAS), so the ratio compares implementations, not thread counts.
Images are decoded before timing; per-image numbers of both sides must agree (checked, reported).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(var, "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from scipy import ndimage  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fgdsr.data.datasets import default_data_root, resolve_dataset  # noqa: E402
from fgdsr.evaluate import _LR_CACHE, evaluate  # noqa: E402
from fgdsr.inference import BicubicUpscaler  # noqa: E402

# ----------------------------------------------------------------------------- the NumPy/SciPy reference


def ref_cubic(x):
    ax = np.abs(x)
    return (1.5 * ax**3 - 2.5 * ax**2 + 1) * (ax <= 1) + (-0.5 * ax**3 + 2.5 * ax**2 - 4 * ax + 2) * (
        (ax > 1) & (ax <= 2)
    )


def ref_contributions(n_in, n_out, scale):
    width = 4.0 / scale if scale < 1 else 4.0
    x = np.arange(1, n_out + 1)
    u = x / scale + 0.5 * (1 - 1 / scale)
    left = np.floor(u - width / 2)
    idx = left[:, None] + np.arange(math.ceil(width) + 2)[None, :]
    d = u[:, None] - idx
    w = scale * ref_cubic(scale * d) if scale < 1 else ref_cubic(d)
    w /= w.sum(1, keepdims=True)
    aux = np.concatenate([np.arange(n_in), np.arange(n_in - 1, -1, -1)])
    return aux[np.mod(idx.astype(int) - 1, 2 * n_in)], w


def ref_resize_axis(img, axis, n_out, scale):
    idx, w = ref_contributions(img.shape[axis], n_out, scale)
    moved = np.moveaxis(img, axis, 0)  # (n_in, ...)
    out = np.einsum("op,op...->o...", w, moved[idx])
    return np.moveaxis(out, 0, axis)


def ref_imresize(img, scale):
    out = img.astype(np.float64)
    for axis in (0, 1):  # equal scales: rows first
        out = ref_resize_axis(out, axis, int(math.ceil(out.shape[axis] * scale - 1e-9)), scale)
    return out


def ref_y(rgb_u8, gray):
    if gray:
        return rgb_u8[..., 0].astype(np.float64)
    y = 16 + (65.481 * rgb_u8[..., 0] + 128.553 * rgb_u8[..., 1] + 24.966 * rgb_u8[..., 2]) / 255
    return np.floor(y + 0.5)


def ref_ssim(a, b):
    r = np.arange(11) - 5
    win = np.exp(-(r[:, None] ** 2 + r[None, :] ** 2) / (2 * 1.5**2))
    win /= win.sum()

    def filt(x):  # filter2(win, x, 'valid')
        return ndimage.correlate(x, win, mode="constant")[5:-5, 5:-5]

    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    mu1, mu2 = filt(a), filt(b)
    s1, s2, s12 = filt(a * a) - mu1**2, filt(b * b) - mu2**2, filt(a * b) - mu1 * mu2
    return float(np.mean(((2 * mu1 * mu2 + c1) * (2 * s12 + c2)) / ((mu1**2 + mu2**2 + c1) * (s1 + s2 + c2))))


def ref_entropy(y_u8):
    p = np.bincount(y_u8.ravel(), minlength=256) / y_u8.size
    p = p[p > 0]
    return float(-(p * np.log2(p)).sum())


def ref_evaluate(images, scale):
    """images: list of (name, hr uint8, gray) -> list of (psnr, ssim, entropy)."""
    out = []
    for _name, img, gray in images:
        h, w = img.shape[:2]
        hr = img[: h - h % scale, : w - w % scale]
        lr = ref_imresize(hr, 1 / scale)
        sr = np.clip(np.floor(ref_imresize(lr, scale) + 0.5), 0, 255).astype(np.uint8)
        ys, yh = ref_y(sr, gray)[scale:-scale, scale:-scale], ref_y(hr, gray)[scale:-scale, scale:-scale]
        mse = np.mean((ys - yh) ** 2)
        ent = ref_entropy(ref_y(img, gray).astype(np.uint8))
        out.append((10 * math.log10(255**2 / mse), ref_ssim(ys, yh), ent))
    return out


# ------------------------------------------------------------------------------- protocol variants


def variant_rows(ds, scale: int) -> dict[str, tuple[float, float]]:
    """Mean (PSNR, SSIM) of `ds` at `scale` under each protocol variant (the first is fgdsr's default)."""
    from fgdsr.data.color import to_uint8
    from fgdsr.data.imresize import imresize, imresize_uint8, modcrop
    from fgdsr.metrics import evaluate_pair, make_lr, psnr, ssim, y_channel

    def up(lr_255):
        x = torch.from_numpy(np.asarray(lr_255, dtype=np.float64)).permute(2, 0, 1)[None]
        return imresize(x, scale=scale)[0].permute(1, 2, 0).numpy()

    acc: dict[str, list] = {}
    for i in range(len(ds)):
        hr, gray = modcrop(ds.image(i), scale), ds.is_gray(i)
        lr = make_lr(hr, scale)
        sr = {
            "default: LR float, SR uint8, Y rounded": to_uint8(up(lr * 255)),
            "LR rounded to uint8 once": to_uint8(up(make_lr(hr, scale, lr_uint8=True))),
            "MATLAB imresize on uint8 (rounds after each axis pass)": imresize_uint8(
                imresize_uint8(hr, scale=1 / scale), scale=scale
            ),
        }
        for name, img in sr.items():
            acc.setdefault(name, []).append(evaluate_pair(img, hr, scale, gray=gray))
        acc.setdefault("Y not rounded (double rgb2ycbcr)", []).append(
            evaluate_pair(sr["default: LR float, SR uint8, Y rounded"], hr, scale, gray=gray, y_rounded=False)
        )
        acc.setdefault("single-channel files through rgb2ycbcr", []).append(
            evaluate_pair(sr["default: LR float, SR uint8, Y rounded"], hr, scale, gray=False)
        )
        # the classic VDSR/LapSRN-style script: Y (rounded uint8) of the HR, bicubic on Y as double
        hy = y_channel(hr, gray)
        t = torch.from_numpy(hy)
        sy = imresize(imresize(t, scale=1 / scale), scale=scale).numpy()
        acc.setdefault("Y-only: bicubic of the HR Y as double", []).append(
            (psnr(sy, hy, shave=scale), ssim(sy, hy, shave=scale))
        )
    return {k: tuple(np.mean(v, axis=0)) for k, v in acc.items()}


def print_variants(sets, scales) -> None:
    print("| variant | " + " | ".join(f"{ds.name} x{s}" for ds in sets for s in scales) + " |")
    print("|---|" + "---|" * (len(sets) * len(scales)))
    table: dict[str, list[str]] = {}
    for ds in sets:
        for s in scales:
            for name, (p, q) in variant_rows(ds, s).items():
                table.setdefault(name, []).append(f"{p:.3f} / {q:.4f}")
    for name, cells in table.items():
        print(f"| {name} | " + " | ".join(cells) + " |")


# ------------------------------------------------------------------------------------------------ main


def cpu_model() -> str:
    try:
        for line in subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines():
            if line.startswith("Model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sets", nargs="+", default=["Set5", "Set14", "BSD200"])
    ap.add_argument("--scales", nargs="+", type=int, default=[2, 3, 4])
    ap.add_argument("--data-root", default=None)
    ap.add_argument("--max-images", type=int, default=None, help="first N images per set (quick runs)")
    ap.add_argument("--variants", action="store_true", help="print the protocol variants' PSNR/SSIM table")
    args = ap.parse_args()
    torch.set_num_threads(1)
    root = Path(args.data_root) if args.data_root else default_data_root()
    sets = [resolve_dataset(s, root).subset(args.max_images) for s in args.sets]
    if args.variants:
        print_variants(sets, args.scales)
        return
    decoded = {ds.name: [(ds.names[i], ds.image(i), ds.is_gray(i)) for i in range(len(ds))] for ds in sets}
    n = sum(len(v) for v in decoded.values()) * len(args.scales)

    _LR_CACHE.clear()
    w0, c0 = time.perf_counter(), time.process_time()
    ours = evaluate({"bicubic": BicubicUpscaler}, sets, args.scales, root)
    ours_wall, ours_cpu = time.perf_counter() - w0, time.process_time() - c0

    w0, c0 = time.perf_counter(), time.process_time()
    ref = {(name, s): ref_evaluate(decoded[name], s) for name in decoded for s in args.scales}
    ref_wall, ref_cpu = time.perf_counter() - w0, time.process_time() - c0

    max_dp = max_ds = max_de = 0.0
    rows = []
    for r in ours["results"]:
        rr = ref[(r["dataset"], r["scale"])]
        for e, (p, s, h) in zip(r["images"], rr, strict=True):
            max_dp, max_ds, max_de = (
                max(max_dp, abs(e["psnr"] - p)),
                max(max_ds, abs(e["ssim"] - s)),
                max(max_de, abs(e["entropy"] - h)),
            )
        rows.append(
            (
                r["dataset"],
                r["scale"],
                r["psnr"],
                r["ssim"],
                np.mean([x[0] for x in rr]),
                np.mean([x[1] for x in rr]),
            )
        )
    print(
        f"machine: {cpu_model()}, {os.cpu_count()} cores; torch {torch.__version__}; numpy {np.__version__}"
    )
    print(f"date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; load average {os.getloadavg()}")
    print(f"{'set':8s} {'x':>2s} {'fgdsr PSNR/SSIM':>18s} {'reference PSNR/SSIM':>20s}")
    for name, s, p, ss, rp, rs in rows:
        print(f"{name:8s} {s:2d} {p:9.4f}/{ss:.4f} {rp:11.4f}/{rs:.4f}")
    print(
        f"max |dPSNR| {max_dp:.2e} dB, |dSSIM| {max_ds:.2e}, |dEntropy| {max_de:.2e} over {n} image evaluations"
    )
    print(
        f"fgdsr:     {ours_wall:7.2f} s wall, {ours_cpu:7.2f} s CPU -> {n / ours_wall:6.2f} images/s (wall)"
    )
    print(f"reference: {ref_wall:7.2f} s wall, {ref_cpu:7.2f} s CPU -> {n / ref_wall:6.2f} images/s (wall)")
    print(f"speed-up: {ref_wall / ours_wall:.2f}x wall, {ref_cpu / ours_cpu:.2f}x CPU (target >= 3x)")
    print(json.dumps({"images": n, "ours_wall": ours_wall, "ours_cpu": ours_cpu, "ref_wall": ref_wall,
                      "ref_cpu": ref_cpu, "max_dpsnr": max_dp, "max_dssim": max_ds}))  # fmt: skip


if __name__ == "__main__":
    main()
