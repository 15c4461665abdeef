"""Why `fgdsr upscale` shifts its static-shape windows inward instead of padding them: what padding does to the
border pixels of a trained model (the authors' LapSRN x4).

An HR crop of Set5 butterfly (240 x 256) is downscaled x4 (MATLAB bicubic), upscaled untiled (the reference:
the network's convolutions zero-pad at the border, as in training), and upscaled with 30 LR pixels of padding on
the right (replicate, reflect, symmetric, zeros), cropped back. Printed per mode: the largest change of an
output pixel (grey levels), how many HR columns from the right border change by more than one grey level, and
the RMSE of the last 16 HR columns against the HR image for both.

    .venv/bin/python benchmarks/tile_padding.py [--mat ../shared/weights/lapsrn-official/LapSRN_x4.mat]
        [--image ../shared/datasets/Set5/HR/butterfly.png]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

SHARED = Path(__file__).resolve().parents[2] / "shared"


def main() -> None:
    import numpy as np
    import torch
    import torch.nn.functional as F
    from PIL import Image

    from fgdsr.checkpoint import load_model
    from fgdsr.data.imresize import imresize
    from fgdsr.matconvnet import import_weights

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--mat", default=str(SHARED / "weights" / "lapsrn-official" / "LapSRN_x4.mat"))
    p.add_argument("--image", default=str(SHARED / "datasets" / "Set5" / "HR" / "butterfly.png"))
    p.add_argument("--pad", type=int, default=30, help="LR pixels of padding on the right")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        model, _, _ = load_model(import_weights(args.mat, Path(tmp) / "x4"))
    hr = np.asarray(Image.open(args.image).convert("L"), dtype=np.float64)[:240, :256] / 255
    hr_t = torch.from_numpy(hr)[None, None]
    y = imresize(hr_t, scale=0.25).float()
    pad = args.pad
    with torch.no_grad():
        ref = model(y)
        for mode in ("replicate", "reflect", "symmetric", "zeros"):
            if mode == "symmetric":
                yp = torch.cat([y, y.flip(-1)[..., :pad]], -1)
            elif mode == "zeros":
                yp = F.pad(y, (0, pad, 0, 0))
            else:
                yp = F.pad(y, (0, pad, 0, 0), mode=mode)
            out = model(yp)[..., : ref.shape[-2], : ref.shape[-1]]
            d = (out - ref).abs() * 255
            cols = d.amax(dim=(0, 1, 2)).numpy()[::-1]
            band = np.nonzero(cols > 1.0)[0]
            rmse_ref = float(((ref.double() - hr_t)[..., -16:] ** 2).mean().sqrt() * 255)
            rmse_pad = float(((out.double() - hr_t)[..., -16:] ** 2).mean().sqrt() * 255)
            print(f"{mode:9s} max change {float(d.max()):6.1f} grey levels; HR columns changed by > 1: "
                  f"{band.max() + 1 if len(band) else 0}; RMSE of the last 16 HR columns vs HR: untiled "
                  f"{rmse_ref:.2f}, padded {rmse_pad:.2f}")  # fmt: skip


if __name__ == "__main__":
    main()
