"""`fgdsr export`, `fgdsr build-engine`, `fgdsr benchmark`: ONNX, TensorRT engines, latency vs the baseline.

Nothing heavy at the top: torch, onnx, tensorrt and mlflow are imported inside the commands.
"""

from __future__ import annotations

import json
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
    from orchestrator.bench_tracking import resolve_model
    from trt.export import ExportOptions, check_opset, export_source
    from trt.sources import resolve_source

    check_opset(opset)  # a bad opset is refused before anything is loaded or written
    options = ExportOptions(precision=precision, opset=opset, rgb=rgb)
    src = resolve_source(resolve_model(model, tracking_uri, "MODEL"), "MODEL", label=model)
    meta = export_source(src, out, options)
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
    batch: Annotated[int, typer.Option(help="images per inference (the latency mode)")] = 1,
    throughput_batch: Annotated[
        int, typer.Option("--throughput-batch", help="also time throughput at this batch (0: off)")
    ] = 0,
    dataset: Annotated[
        str | None,
        typer.Option(
            help="PSNR/SSIM data set through the backend ('none' skips; default Set5, else builtin-eval)"
        ),
    ] = None,
    data_root: Annotated[str | None, typer.Option("--data-root", help="folder of the data sets")] = None,
    device: Annotated[str, typer.Option(help="auto | cpu | cuda (tensorrt: cuda)")] = "auto",
    threads: Annotated[int | None, typer.Option(help="CPU threads for torch and onnxruntime")] = None,
    processes: Annotated[int, typer.Option(help="fresh timing processes pooled in the interval (>= 3)")] = 5,
    profile: Annotated[
        bool, typer.Option("--profile", help="per-operator time: trunk / FD head / Class-Module")
    ] = False,
    tolerance: Annotated[float, typer.Option(help="latency ratio tolerance for 'no extra cost'")] = 0.03,
    json_out: Annotated[bool, typer.Option("--json", help="print the JSON only")] = False,
    out: Annotated[str | None, typer.Option("--out", help="folder for benchmark.md/.png/.json")] = None,
    tracking_uri: Annotated[
        str | None, typer.Option("--tracking-uri", help="log an MLflow run here (and resolve run ids)")
    ] = None,
    warmup_ms: Annotated[float, typer.Option("--warmup-ms", help="warm-up time per model")] = 200.0,
    warmup_iters: Annotated[int, typer.Option("--warmup-iters", help="max warm-up iterations")] = 50,
    min_iters: Annotated[int, typer.Option("--min-iters", help="timed iterations per process")] = 200,
    min_seconds: Annotated[float, typer.Option("--min-seconds", help="or timed s per process")] = 3.0,
    min_rounds: Annotated[int, typer.Option("--min-rounds", help="min rounds per process")] = 10,
    cuda_graph: Annotated[bool, typer.Option("--cuda-graph", help="tensorrt: replay a CUDA graph")] = False,
) -> None:
    """Latency, params, Mult-Adds and PSNR of a candidate vs the baseline, interleaved in fresh processes; a verdict."""
    from orchestrator.bench_tracking import log_benchmark, resolve_model
    from trt.backends import choose_backend, choose_device
    from trt.bench import BenchmarkPlan, run_benchmark
    from trt.report import print_table, result_dict, write_report
    from trt.shapes import parse_size
    from trt.timing import TimingPlan

    backend, _why = choose_backend(backend)
    plan = BenchmarkPlan(
        resolve_model(baseline, tracking_uri, "--baseline"), resolve_model(candidate, tracking_uri, "--candidate"),
        backend=backend, precision=precision, device=choose_device(backend, device), threads=threads, scale=scale,
        hr_size=parse_size(hr_size, "--hr-size"), batch=batch,
        dataset="" if dataset is None else (None if dataset.lower() == "none" else dataset), data_root=data_root,
        timing=TimingPlan(warmup_iters, warmup_ms, min(3, warmup_iters), min_iters, min_seconds, min_rounds),
        processes=processes, throughput_batch=throughput_batch, profile=profile, tolerance=tolerance,
        workdir=f"{out}/models" if out else None,  # exported .onnx/.engine files are kept next to the report
        cuda_graph=cuda_graph, labels=(baseline, candidate),
    )  # fmt: skip
    result = run_benchmark(plan)
    data = result_dict(result)
    if out:
        data["report"] = {k: str(v) for k, v in write_report(result, out).items()}
    if tracking_uri:
        data["mlflow_run_id"] = log_benchmark(result, tracking_uri)
    if json_out:
        typer.echo(json.dumps(data, indent=2))
        return
    print_table(result)
    if out:
        typer.echo(f"report: {data['report']['markdown']}")
    if "mlflow_run_id" in data:
        typer.echo(f"MLflow run: {data['mlflow_run_id']}")
