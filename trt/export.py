"""ONNX export of an SRModel (torch.onnx, dynamo): dynamic batch/height/width, one file, ORT parity, sidecar.

Graph: input `lr` (N, 1, h, w) float32 in [0, 1] (the LR Y channel) -> output `sr` (N, 1, h*s, w*s) float32.
For FD/CS the Class-Module, the K-bin head, argmax, gather and the bounded offset are inside the graph.
FP16 export converts weights and compute to float16 with float32 I/O (casts in the graph): TensorRT 11 networks
are strongly typed, so the precision has to be in the ONNX graph, not in a builder flag.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import warnings
from pathlib import Path
from typing import Any

from fgdsr.errors import UserError
from trt.sidecar import sha256_path, write_sidecar

INPUT_NAME = "lr"
OUTPUT_NAME = "sr"
PRECISIONS = ("fp32", "fp16")
# Two LR sizes for the ORT parity check: odd, non-square, not multiples of the Class-Module's 32-pixel patch,
# different from the trace size, so a shape frozen at export time shows up as an error.
PARITY_SIZES = ((37, 29), (52, 64))
TRACE_SIZE = (40, 48)  # (h, w) of the example input
FP32_TOL = 1e-4  # max abs error on [0, 1] images (issue 5)
# FD/CS pick a bin by argmax: where two logits tie to float rounding, torch and ORT (different summation
# orders) may pick neighbouring bins and that pixel moves by up to an area width. Such ties are legitimate;
# a wrongly exported op moves far more pixels. So fp32 parity fails only when more than this share of pixels
# is off by >= FP32_TOL (the count is reported in the sidecar either way).
FP32_TIE_SHARE = 1e-4


def require_onnx() -> None:
    """One-line error naming the extra when onnx/onnxruntime are missing."""
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError:
        raise UserError("onnx/onnxruntime are not installed; pip install 'fgdsr[onnx]'") from None


def _fp16_wrapper(model):
    """FP16 weights and compute, FP32 input and output (the casts become ONNX Cast nodes)."""
    import torch

    class Fp16IO(torch.nn.Module):
        def __init__(self, inner: torch.nn.Module) -> None:
            super().__init__()
            self.inner = inner.half()

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.inner(x.half()).float()

    return Fp16IO(model)


def symbolic_input_dims(path: str | Path) -> list[str | int]:
    """The input's dims as written in the ONNX file: a name for a symbolic dim, an int for a static one."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    dims = model.graph.input[0].type.tensor_type.shape.dim
    return [d.dim_param if d.dim_param else int(d.dim_value) for d in dims]


def check_symbolic(path: str | Path) -> list[str | int]:
    """Raise when batch, height or width is static: the exporter can fall back to static shapes silently."""
    dims = symbolic_input_dims(path)
    static = [axis for axis in (0, 2, 3) if axis >= len(dims) or not isinstance(dims[axis], str)]
    if len(dims) != 4 or static:
        raise UserError(f"{path}: exported input dims {dims} are not symbolic on axes {static}; the exporter "
                        "specialised the shape (a shape-dependent Python branch in the model?); fix the model code")  # fmt: skip
    return dims


def ort_session(path: str | Path, threads: int | None = None, providers: list[str] | None = None):
    """An onnxruntime InferenceSession; a corrupt file is a one-line UserError."""
    require_onnx()
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    if threads:
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
    try:
        return ort.InferenceSession(
            str(path), sess_options=opts, providers=providers or ["CPUExecutionProvider"]
        )
    except Exception as e:  # onnxruntime raises its own Fail/InvalidGraph/… types
        first = " ".join(str(e).split())[:200]
        raise UserError(
            f"{path}: not a loadable ONNX model ({first}); re-export it with fgdsr export"
        ) from None


def bin_agreement(a, b, bins: int) -> float:
    """Fraction of pixels whose values fall in the same of K equal bins over [0, 1] (the argmax proxy)."""
    import numpy as np

    ka = np.clip((np.asarray(a, dtype=np.float64) * bins).astype(np.int64), 0, bins - 1)
    kb = np.clip((np.asarray(b, dtype=np.float64) * bins).astype(np.int64), 0, bins - 1)
    return float((ka == kb).mean())


def parity(model, onnx_path: str | Path, sizes=PARITY_SIZES, bins: int = 32, seed: int = 0) -> list[dict]:
    """Compare the FP32 torch model with ONNX Runtime on random LR images of `sizes` ((h, w), batch 2).

    Returns one dict per size: max_abs_err, mean_abs_err, bin_agreement (share of pixels in the same bin).
    Random uniform images are the hard case for FD (many near-tied logits); natural images agree better.
    """
    import numpy as np
    import torch

    sess = ort_session(onnx_path)
    gen = torch.Generator().manual_seed(seed)
    out = []
    for h, w in sizes:
        x = torch.rand(2, 1, h, w, generator=gen)
        with torch.no_grad():
            ref = model(x).float().numpy()
        got = sess.run([OUTPUT_NAME], {INPUT_NAME: x.numpy()})[0]
        if got.shape != ref.shape:
            raise UserError(f"{onnx_path}: ONNX output shape {got.shape} != torch {ref.shape} at LR {h}x{w}; "
                            "the export froze a shape; fix the model code")  # fmt: skip
        err = np.abs(got.astype(np.float64) - ref)
        out.append({"lr_hw": [h, w], "max_abs_err": float(err.max()), "mean_abs_err": float(err.mean()),
                    "pixels_over_tol": int((err >= FP32_TOL).sum()), "pixels": int(err.size),
                    "bin_agreement": bin_agreement(got, ref, bins)})  # fmt: skip
    return out


def _quiet_export(fn):
    """Run the exporter without its progress prints and torchvision warnings (the CLI prints its own lines)."""
    for name in ("torch.onnx", "torch.export", "torch._dynamo", "onnxscript"):
        logging.getLogger(name).setLevel(logging.ERROR)
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        return fn()


def export_onnx(
    model,
    out: str | Path,
    cfg: Any,
    *,
    precision: str = "fp32",
    opset: int | None = None,
    source_sha256: str = "",
    source: str = "",
    check: bool = True,
) -> dict[str, Any]:
    """Export `model` (an SRModel, FP32, any device) to the single file `out`; write `out`.json; return it.

    cfg: the TrainConfig the model was built from (scale, loss=variant, bins; stored in the sidecar so the
    benchmark can count params/Mult-Adds of an .onnx). Raises UserError when dims are static or parity fails.
    """
    import onnx
    import torch

    import fgdsr

    require_onnx()
    if precision not in PRECISIONS:
        raise UserError(f"--precision: '{precision}' is not one of {', '.join(PRECISIONS)}")
    out = Path(out)
    if out.suffix.lower() != ".onnx":
        raise UserError(f"--out: '{out}' must end in .onnx")
    model = model.float().cpu().eval()
    graph_model = _fp16_wrapper(_clone(model)) if precision == "fp16" else model
    batch = torch.export.Dim("batch", min=1, max=1024)
    height = torch.export.Dim("height", min=8, max=8192)
    width = torch.export.Dim("width", min=8, max=8192)
    example = torch.rand(2, 1, *TRACE_SIZE)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f"{out.name}.tmp-{os.getpid()}.onnx")
    try:
        try:
            _quiet_export(lambda: torch.onnx.export(
                graph_model, (example,), str(tmp), dynamo=True, external_data=False, opset_version=opset,
                dynamic_shapes=({0: batch, 2: height, 3: width},), input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME]))  # fmt: skip
        except Exception as e:
            first = " ".join(str(e).split())[:240]
            raise UserError(f"export: torch.onnx failed ({type(e).__name__}: {first}); "
                            "check the model's forward for data-dependent Python control flow") from None  # fmt: skip
        dims = check_symbolic(tmp)
        onnx.checker.check_model(str(tmp))
        opset_used = next(o.version for o in onnx.load(str(tmp), load_external_data=False).opset_import
                          if o.domain in ("", "ai.onnx"))  # fmt: skip
        bins = int(getattr(cfg, "bins", 32))
        checks = parity(model, tmp, bins=bins) if check else []
        if precision == "fp32":
            bad = [c for c in checks if c["pixels_over_tol"] > FP32_TIE_SHARE * c["pixels"]]
            if bad:
                c = bad[0]
                raise UserError(f"export: ONNX Runtime differs from torch by up to {c['max_abs_err']:.2e} on "
                                f"{c['pixels_over_tol']} of {c['pixels']} pixels (>= {FP32_TOL:g}) at LR "
                                f"{c['lr_hw'][0]}x{c['lr_hw'][1]}, bin agreement {c['bin_agreement']:.4f}; "
                                "an op is exported wrongly; report it with the model config")  # fmt: skip
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    cfg_dict = cfg.to_dict() if hasattr(cfg, "to_dict") else dict(cfg or {})
    sidecar = {
        "fgdsr_version": fgdsr.__version__,
        "source": str(source),
        "source_sha256": source_sha256,
        "onnx_sha256": sha256_path(out),
        "scale": int(cfg_dict.get("scale", 4)),
        "variant": str(cfg_dict.get("loss", "l1")),
        "opset": int(opset_used),
        "input_names": [INPUT_NAME],
        "output_names": [OUTPUT_NAME],
        "input_dims": dims,
        "precision": precision,
        "io_dtype": "float32",
        "parity": {
            "reference": "torch fp32",
            "runtime": "onnxruntime CPU",
            "checks": checks,
            "tolerance": FP32_TOL if precision == "fp32" else None,
        },  # fmt: skip
        "torch_version": torch.__version__,
        "onnx_version": onnx.__version__,
        "config": cfg_dict,
    }
    write_sidecar(out, "onnx", sidecar)
    return sidecar


def _clone(model):
    import copy

    return copy.deepcopy(model)


def export_source(
    source, out: str | Path, *, precision: str = "fp32", opset: int | None = None
) -> dict[str, Any]:
    """Export a resolved `trt.sources.Source` of kind 'checkpoint' (a checkpoint dir or an MLflow run's)."""
    if source.kind != "checkpoint":
        raise UserError(f"export: '{source.label}' is already an {source.kind} file; export takes a checkpoint "
                        "or an MLflow run id")  # fmt: skip
    from fgdsr.checkpoint import load_model

    model, cfg, _meta = load_model(source.path)
    return export_onnx(model, out, cfg, precision=precision, opset=opset, source_sha256=sha256_path(source.path),
                       source=source.label)  # fmt: skip
