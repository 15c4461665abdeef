"""`fgdsr export`, `fgdsr build-engine`, `fgdsr benchmark`: ONNX, TensorRT engines, latency vs the baseline.

Nothing heavy at the top: torch, onnx, tensorrt and mlflow are imported inside the commands.
"""

from __future__ import annotations

from typing import Annotated

import typer


def export(
    model: Annotated[str, typer.Argument(help="a checkpoint directory or an MLflow run id")],
    out: Annotated[str, typer.Option("--out", help="the .onnx file to write (+ .onnx.json sidecar)")],
    precision: Annotated[str, typer.Option(help="fp32 | fp16 (FP16 weights/compute, FP32 I/O)")] = "fp32",
    opset: Annotated[int | None, typer.Option(help="ONNX opset, 18 or more (default 20)")] = None,
    rgb: Annotated[
        bool,
        typer.Option("--rgb", help="image in, image out: RGB (N,3,h,w) [0,1] -> RGB, colour in the graph"),
    ] = False,
    tracking_uri: Annotated[
        str | None, typer.Option("--tracking-uri", help="MLflow URI for a run id")
    ] = None,
) -> None:
    """Export a checkpoint to ONNX (dynamic batch/height/width), check ORT parity, write a sidecar JSON."""
    from trt.export import ExportOptions, check_opset, export_source
    from trt.sources import resolve_source

    check_opset(opset)  # a bad opset is refused before anything is loaded or written
    options = ExportOptions(precision=precision, opset=opset, rgb=rgb)
    meta = export_source(resolve_source(model, tracking_uri, "MODEL"), out, options)
    checks = ", ".join(
        f"LR {c['lr_hw'][0]}x{c['lr_hw'][1]}: max err {c['max_abs_err']:.1e}, bins {c['bin_agreement']:.4f}"
        for c in meta["parity"]["checks"]
    )
    kind = "RGB in/out" if rgb else "Y in/out"
    typer.echo(f"wrote {out} ({meta['variant']} x{meta['scale']}, {kind}, {precision}, opset {meta['opset']}, "
               f"input {meta['input_dims']}); ORT parity: {checks}")  # fmt: skip


def build_engine(
    onnx: Annotated[str, typer.Argument(help="an .onnx written by fgdsr export (with its sidecar)")],
    out: Annotated[str, typer.Option("--out", help="the engine file to write (+ .engine.json sidecar)")],
    min_size: Annotated[str, typer.Option("--min", help="smallest HR output WxH (or lr:WxH)")] = "64x64",
    opt_size: Annotated[
        str, typer.Option("--opt", help="HR size TensorRT tunes for (or lr:WxH)")
    ] = "1280x720",
    max_size: Annotated[str, typer.Option("--max", help="largest HR output WxH (or lr:WxH)")] = "1920x1080",
    batch: Annotated[int, typer.Option(help="batch size of the profile (min 1, opt = max = this)")] = 1,
    workspace_gb: Annotated[float, typer.Option("--workspace-gb", help="builder workspace limit, GiB")] = 4.0,
    timing_cache: Annotated[str | None, typer.Option("--timing-cache", help="load/save this cache")] = None,
) -> None:
    """Build a TensorRT engine (one optimisation profile) from an exported ONNX file."""
    from trt.engine import build_engine as build
    from trt.shapes import make_profile, parse_size
    from trt.sidecar import read_sidecar

    meta = read_sidecar(onnx, "onnx")
    profile = make_profile(parse_size(min_size, "--min"), parse_size(opt_size, "--opt"),
                           parse_size(max_size, "--max"), int(meta["scale"]), (1, batch, batch))  # fmt: skip
    emeta = build(onnx, out, profile, workspace_gb=workspace_gb, timing_cache=timing_cache)
    typer.echo(f"wrote {out} (TensorRT {emeta['tensorrt_version']}, {emeta['gpu_name']}, "
               f"LR profile {profile.min} .. {profile.opt} .. {profile.max}, {emeta['precision']})")  # fmt: skip


def benchmark(
    baseline: Annotated[str, typer.Option("--baseline", help="checkpoint, MLflow run id, .onnx or engine")],
    candidate: Annotated[str, typer.Option("--candidate", help="checkpoint, MLflow run id, .onnx or engine")],
    backend: Annotated[str, typer.Option(help="torch | torch-compile | onnxruntime | tensorrt")] = "torch",
    precision: Annotated[str, typer.Option(help="fp32 | fp16")] = "fp32",
    scale: Annotated[int, typer.Option(help="the models' scale")] = 4,
    hr_size: Annotated[
        str, typer.Option("--hr-size", help="HR output WxH (fixed shape; or lr:WxH)")
    ] = "1280x720",
    batch: Annotated[int, typer.Option(help="images per inference")] = 1,
    dataset: Annotated[
        str, typer.Option(help="PSNR/SSIM data set through the backend ('none' skips)")
    ] = "Set5",
    data_root: Annotated[str | None, typer.Option("--data-root", help="folder of the data sets")] = None,
    device: Annotated[str, typer.Option(help="cpu | cuda (tensorrt: cuda)")] = "auto",
    threads: Annotated[int | None, typer.Option(help="CPU threads for torch and onnxruntime")] = None,
    tolerance: Annotated[float, typer.Option(help="latency ratio tolerance for 'no extra cost'")] = 0.03,
    json_out: Annotated[bool, typer.Option("--json", help="print the JSON only")] = False,
    out: Annotated[str | None, typer.Option("--out", help="folder for benchmark.md/.png/.json")] = None,
    tracking_uri: Annotated[str | None, typer.Option("--tracking-uri", help="log an MLflow run here")] = None,
    warmup_ms: Annotated[float, typer.Option("--warmup-ms", help="warm-up time per model")] = 200.0,
    warmup_iters: Annotated[int, typer.Option("--warmup-iters", help="warm-up iterations per model")] = 50,
    min_iters: Annotated[int, typer.Option("--min-iters", help="timed iterations per model")] = 200,
    min_seconds: Annotated[float, typer.Option("--min-seconds", help="or timed seconds per model")] = 3.0,
    min_rounds: Annotated[
        int, typer.Option("--min-rounds", help="at least this many interleaved rounds")
    ] = 5,
    cuda_graph: Annotated[bool, typer.Option("--cuda-graph", help="tensorrt: replay a CUDA graph")] = False,
) -> None:
    """Latency, params, Mult-Adds and PSNR of a candidate vs the baseline, interleaved in one run; a verdict."""
    from fgdsr.errors import UserError
    from trt.bench import TimingPlan, run_benchmark
    from trt.report import print_table, to_json, write_report
    from trt.shapes import parse_size

    if precision not in ("fp32", "fp16"):
        raise UserError(f"--precision '{precision}': expected fp32 or fp16")
    if device == "auto":  # the GPU when this backend can use one here, else the CPU
        if backend == "tensorrt":
            device = "cuda"
        elif backend == "onnxruntime":
            import onnxruntime

            device = "cuda" if "CUDAExecutionProvider" in onnxruntime.get_available_providers() else "cpu"
        else:
            import torch

            device = "cuda" if torch.cuda.is_available() else "cpu"
    if backend == "tensorrt" and device != "cuda":
        raise UserError("--backend tensorrt runs on --device cuda only")
    if min(warmup_iters, min_iters, min_rounds) < 1 or min(warmup_ms, min_seconds) < 0:
        raise UserError(
            "--warmup-iters/--min-iters/--min-rounds must be >= 1, --warmup-ms/--min-seconds >= 0"
        )
    plan = TimingPlan(warmup_iters, warmup_ms, min_iters, min_seconds, min_rounds)
    result = run_benchmark(
        baseline, candidate, backend=backend, precision=precision, scale=scale,
        hr_size=parse_size(hr_size, "--hr-size"), batch=batch,
        dataset=None if dataset.lower() == "none" else dataset, data_root=data_root, device=device,
        threads=threads, plan=plan, tolerance=tolerance, tracking_uri=tracking_uri, cuda_graph=cuda_graph,
        workdir=f"{out}/models" if out else None,  # exported .onnx/.engine files are kept next to the report
    )  # fmt: skip
    if out:
        result["report"] = {k: str(v) for k, v in write_report(result, out).items()}
    if json_out:
        typer.echo(to_json(result))
        return
    print_table(result)
    if out:
        typer.echo(f"report: {result['report']['markdown']}")
