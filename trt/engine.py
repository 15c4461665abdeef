"""TensorRT engines (TensorRT 10/11 Python API), kept thin: build from ONNX with one profile, load with checks.

Engines are not portable across TensorRT versions or GPUs, so every engine has a sidecar (TensorRT version,
GPU name, compute capability, profile, precision, ONNX sha256) and `load_engine` refuses a mismatch.
`tensorrt` and `pycuda` are imported lazily; without them every entry point raises one line naming the extra.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import fgdsr
from fgdsr.errors import UserError
from trt.shapes import Profile
from trt.sidecar import read_sidecar, sha256_path, write_bytes_atomic, write_sidecar

INSTALL_HINT = "pip install 'fgdsr[trt]' (TensorRT 10/11 and pycuda; needs an NVIDIA GPU)"


def import_tensorrt():
    """`tensorrt`, or a UserError naming the extra."""
    try:
        import tensorrt
    except ImportError:
        raise UserError(f"tensorrt is not installed; {INSTALL_HINT}") from None
    return tensorrt


def gpu_identity() -> dict[str, Any]:
    """{'gpu_name', 'compute_capability'} of device 0 via pycuda (a UserError without pycuda or a GPU)."""
    try:
        import pycuda.driver as cuda
    except ImportError:
        raise UserError(f"pycuda is not installed; {INSTALL_HINT}") from None
    try:
        cuda.init()
        dev = cuda.Device(0)
        major, minor = dev.compute_capability()
        return {"gpu_name": dev.name(), "compute_capability": f"{major}.{minor}"}
    except cuda.Error as e:
        raise UserError(f"CUDA: no usable GPU ({e}); TensorRT needs an NVIDIA GPU") from None


def _logger(trt):
    return trt.Logger(trt.Logger.WARNING)


def build_engine(
    onnx_path: str | Path,
    out: str | Path,
    profile: Profile,
    *,
    workspace_gb: float = 4.0,
    timing_cache: str | Path | None = None,
) -> dict[str, Any]:
    """Build `out` from `onnx_path` (an fgdsr export with its sidecar) for the LR-input `profile`.

    Precision comes from the ONNX graph (strongly typed network: FP16 weights/compute when exported as fp16).
    The timing cache is loaded when the file exists and saved back after the build. Returns the engine sidecar.
    """
    onnx_path, out = Path(onnx_path), Path(out)
    if not onnx_path.is_file():
        raise UserError(f"{onnx_path}: ONNX file not found; create it with fgdsr export")
    onnx_meta = read_sidecar(onnx_path, "onnx")
    trt = import_tensorrt()
    gpu = gpu_identity()
    logger = _logger(trt)
    builder = trt.Builder(logger)
    # Strongly typed: TensorRT follows the graph's dtypes (TensorRT 11 has only this mode; 10 needs the flag).
    flags = 0
    if hasattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED"):
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i).desc()) for i in range(parser.num_errors))[:240]
        raise UserError(f"{onnx_path}: TensorRT cannot parse it ({errors or 'unknown error'}); re-export it")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gb * (1 << 30)))
    opt_profile = builder.create_optimization_profile()
    input_name = network.get_input(0).name
    opt_profile.set_shape(input_name, profile.min, profile.opt, profile.max)
    config.add_optimization_profile(opt_profile)
    cache_path = Path(timing_cache) if timing_cache else None
    cache_bytes = cache_path.read_bytes() if cache_path and cache_path.is_file() else b""
    cache = config.create_timing_cache(cache_bytes)
    config.set_timing_cache(cache, ignore_mismatch=False)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise UserError(f"{onnx_path}: TensorRT build failed (see the log above); try a larger --workspace-gb "
                        "or a smaller --max")  # fmt: skip
    data = bytes(serialized)
    write_bytes_atomic(out, data)
    if cache_path:
        write_bytes_atomic(cache_path, bytes(config.get_timing_cache().serialize()))
    meta = {
        "fgdsr_version": fgdsr.__version__,
        "onnx": str(onnx_path),
        "onnx_sha256": sha256_path(onnx_path),
        "engine_sha256": hashlib.sha256(data).hexdigest(),
        "tensorrt_version": trt.__version__,
        **gpu,
        "profile": profile.to_dict(),
        "precision": onnx_meta["precision"],
        "scale": onnx_meta["scale"],
        "variant": onnx_meta["variant"],
        "input_names": [input_name],
        "output_names": [network.get_output(0).name],
        "workspace_gb": workspace_gb,
        "config": onnx_meta.get("config", {}),
    }
    write_sidecar(out, "engine", meta)
    return meta


def check_compatible(meta: dict[str, Any], trt_version: str, gpu: dict[str, Any], path: str | Path) -> None:
    """Refuse (one line) an engine whose sidecar names another TensorRT version or GPU."""
    if meta["tensorrt_version"] != trt_version:
        raise UserError(f"{path}: built with TensorRT {meta['tensorrt_version']}, this is {trt_version}; "
                        "rebuild it with fgdsr build-engine (engines are not portable)")  # fmt: skip
    if meta["gpu_name"] != gpu["gpu_name"] or str(meta["compute_capability"]) != str(
        gpu["compute_capability"]
    ):
        raise UserError(f"{path}: built for {meta['gpu_name']} (sm {meta['compute_capability']}), this GPU is "
                        f"{gpu['gpu_name']} (sm {gpu['compute_capability']}); rebuild it with fgdsr build-engine")  # fmt: skip


def read_engine_meta(path: str | Path) -> dict[str, Any]:
    """The engine's sidecar, checked for completeness (no TensorRT needed)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: engine file not found; build it with fgdsr build-engine")
    meta = read_sidecar(path, "engine")
    if meta.get("engine_sha256") and sha256_path(path) != meta["engine_sha256"]:
        raise UserError(f"{path}: contents do not match its sidecar's sha256 (corrupt, truncated or replaced); "
                        "rebuild it with fgdsr build-engine")  # fmt: skip
    return meta


def load_engine(path: str | Path):
    """(ICudaEngine, sidecar) after the sidecar checks; corrupt bytes are a one-line error."""
    path = Path(path)
    meta = read_engine_meta(path)
    trt = import_tensorrt()
    check_compatible(meta, trt.__version__, gpu_identity(), path)
    runtime = trt.Runtime(_logger(trt))
    engine = runtime.deserialize_cuda_engine(path.read_bytes())
    if engine is None:
        raise UserError(f"{path}: TensorRT cannot deserialize it (corrupt or truncated); rebuild it")
    return engine, meta
