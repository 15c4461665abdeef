"""Checkpoints: a directory of safetensors weights + JSON, plus the training state for an exact resume.

Layout of a checkpoint directory:

    model.safetensors    the SRModel's state dict (float tensors, no pickle)
    config.json          TrainConfig.to_dict()
    meta.json            step, metrics, fgdsr version, created (UTC ISO), provenance, any extra keys the caller
                         passes (the orchestrator stores its MLflow run id here)
    training_state.pt    only in training checkpoints: optimizer state, RNG states (python/numpy/torch), step,
                         data-loader position, best PSNR; with EMA on, the raw training weights
                         (`train_weights`: model.safetensors then holds the EMA weights, what evaluation and
                         export read); read back with torch.load(weights_only=True)

A directory is written as `<dir>.tmp-<pid>` and then renamed into place, so a reader never sees half a
checkpoint. Nothing here unpickles a user file: weights are safetensors, metadata is JSON, and the training
state goes through torch's weights-only loader (tensors, numbers, strings, lists, dicts, tuples only).
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import random
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fgdsr.errors import UserError

if TYPE_CHECKING:  # keep `import fgdsr.checkpoint` light; torch is imported inside the functions
    import torch
    from torch import nn

    from fgdsr.config import TrainConfig

WEIGHTS = "model.safetensors"
CONFIG = "config.json"
META = "meta.json"
TRAINING_STATE = "training_state.pt"


# --------------------------------------------------------------------------------------------- writing


def _state_dict_for_save(model: nn.Module) -> dict[str, torch.Tensor]:
    """Detached, contiguous CPU copies: safetensors refuses tensors that share storage (clone breaks sharing)."""
    return {k: v.detach().to("cpu").contiguous().clone() for k, v in model.state_dict().items()}


def _write_json(path: Path, data: dict[str, Any]) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")


def _base_meta(meta: dict[str, Any] | None) -> dict[str, Any]:
    from fgdsr import __version__

    out: dict[str, Any] = {
        "fgdsr_version": __version__,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    out.update(meta or {})  # the caller's keys win (step, metrics, provenance, mlflow_run_id, ...)
    out.setdefault("step", 0)
    out.setdefault("metrics", {})
    out.setdefault("provenance", {})
    return out


def _commit_dir(tmp: Path, final: Path) -> None:
    """Move a fully written `tmp` directory to `final`, replacing an existing checkpoint.

    rename(2) cannot replace a non-empty directory, so the old one is first renamed aside; a crash between
    the two renames leaves `<dir>.old-<pid>` complete, never a half-written `<dir>`.
    """
    old = final.with_name(f"{final.name}.old-{os.getpid()}")
    if final.exists():
        os.replace(final, old)
    os.replace(tmp, final)
    if old.exists():
        shutil.rmtree(old, ignore_errors=True)


def save_model_checkpoint(
    path: str | Path,
    model: nn.Module,
    cfg: TrainConfig,
    meta: dict[str, Any] | None = None,
    training_state: dict[str, Any] | None = None,
) -> Path:
    """Write a checkpoint directory atomically and return its path.

    `model` is the SRModel (its state dict is saved as is); `meta` is passed through to meta.json (must be
    JSON-serialisable); `training_state` (optional) is saved with torch.save as training_state.pt.
    """
    import torch
    from safetensors.torch import save_file

    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(f"{final.name}.tmp-{os.getpid()}")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    try:
        save_file(_state_dict_for_save(model), str(tmp / WEIGHTS), metadata={"format": "pt"})
        _write_json(tmp / CONFIG, cfg.to_dict())
        _write_json(tmp / META, _base_meta(meta))
        if training_state is not None:
            torch.save(training_state, tmp / TRAINING_STATE)
        _commit_dir(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def capture_rng_state() -> dict[str, Any]:
    """Python, numpy and torch RNG states in a form torch.load(weights_only=True) accepts (no numpy objects)."""
    import numpy as np
    import torch

    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "python": random.getstate(),  # (version, tuple of 625 ints, gauss_next): plain Python values
        "numpy": {
            "kind": str(kind),
            "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached": float(cached),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    """Inverse of `capture_rng_state`."""
    import numpy as np
    import torch

    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    n = state["numpy"]
    np.random.set_state(
        (n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"])
    )
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_training_checkpoint(
    path: str | Path,
    model: nn.Module,
    cfg: TrainConfig,
    meta: dict[str, Any],
    optimizer: torch.optim.Optimizer,
    loader_state: dict[str, Any],
    extra_state: dict[str, Any] | None = None,
    train_model: nn.Module | None = None,
) -> Path:
    """A model checkpoint plus training_state.pt (optimizer, RNG states, data-loader position, extras).

    The lr schedule is a pure function of the step (fgdsr.train.lr_at), so `meta["step"]` is its whole state.
    train_model: the weights being optimised when `model` is another copy of them (the EMA model); stored as
    `train_weights` in the training state.
    """
    state = {
        "step": int(meta.get("step", 0)),
        "optimizer": optimizer.state_dict(),
        "rng": capture_rng_state(),
        "loader": dict(loader_state),
        "extra": dict(extra_state or {}),
    }
    if train_model is not None:
        state["train_weights"] = _state_dict_for_save(train_model)
    return save_model_checkpoint(path, model, cfg, meta, training_state=state)


# --------------------------------------------------------------------------------------------- reading


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[0][:200] if text else type(err).__name__


def _check_dir(path: str | Path) -> Path:
    p = Path(path)
    if not p.is_dir():
        if p.is_file() and p.name in (WEIGHTS, CONFIG, META):
            return p.parent  # accept the path of a file inside the checkpoint
        raise UserError(f"{p}: not a checkpoint directory; pass the folder holding {WEIGHTS} and {CONFIG}")
    return p


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise UserError(f"{path}: missing; a checkpoint directory holds {WEIGHTS}, {CONFIG} and {META}")
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise UserError(
            f"{path}: corrupt JSON ({_first_line(e)}); re-save or re-download the checkpoint"
        ) from e
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a JSON object; re-save the checkpoint")
    return data


def read_config(path: str | Path) -> TrainConfig:
    """The TrainConfig stored in a checkpoint (unknown or invalid fields: one line naming config.json)."""
    from fgdsr.config import config_from_dict

    file = _check_dir(path) / CONFIG
    return config_from_dict(_read_json(file), str(file))


def read_meta(path: str | Path) -> dict[str, Any]:
    """The meta.json of a checkpoint (an empty dict is allowed: old or hand-made checkpoints)."""
    file = _check_dir(path) / META
    if not file.is_file():
        return {}
    return _read_json(file)


def read_weights(path: str | Path) -> dict[str, torch.Tensor]:
    """The state dict in model.safetensors (CPU tensors); a corrupt file is a one-line error naming it."""
    from safetensors.torch import load_file

    file = _check_dir(path) / WEIGHTS
    if not file.is_file():
        raise UserError(f"{file}: missing; a checkpoint directory holds {WEIGHTS}, {CONFIG} and {META}")
    try:
        return load_file(str(file), device="cpu")
    except Exception as e:  # safetensors raises its own error types for truncated/garbled headers
        raise UserError(f"{file}: not a readable safetensors file ({_first_line(e)}); re-save it") from e


def _summarise_keys(keys: list[str], n: int = 3) -> str:
    head = ", ".join(keys[:n])
    return head + (f" (+{len(keys) - n} more)" if len(keys) > n else "")


def align_keys(state: dict[str, torch.Tensor], own_keys: list[str]) -> dict[str, torch.Tensor]:
    """Add the SRModel's `trunk.` prefix to a bare trunk state (for example a LapSRN saved on its own)."""
    prefix = "trunk."
    if any(k in own_keys for k in state) or not any(k.startswith(prefix) for k in own_keys):
        return state
    return {prefix + k: v for k, v in state.items()}


def load_state_strict(model: nn.Module, state: dict[str, torch.Tensor], file: Path) -> None:
    """`model.load_state_dict(state)` with every mismatch reported as one line naming `file`."""
    own = model.state_dict()
    state = align_keys(state, list(own))
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing {_summarise_keys(missing)}")
        if unexpected:
            parts.append(f"unexpected {_summarise_keys(unexpected)}")
        raise UserError(f"{file}: weights do not match config.json's model ({'; '.join(parts)})")
    shapes = [k for k in own if tuple(own[k].shape) != tuple(state[k].shape)]
    if shapes:
        k = shapes[0]
        raise UserError(
            f"{file}: weights do not match config.json's model ({k}: {tuple(state[k].shape)} in the file, "
            f"{tuple(own[k].shape)} expected)"
        )
    model.load_state_dict(state, strict=True)


def load_model(path: str | Path, device: str = "cpu") -> tuple[nn.Module, TrainConfig, dict[str, Any]]:
    """Build the checkpoint's SRModel from config.json, load model.safetensors; -> (model in eval mode, cfg, meta)."""
    from fgdsr.models import build_model

    ckpt = _check_dir(path)
    cfg = read_config(ckpt)
    meta = read_meta(ckpt)
    state = read_weights(ckpt)
    model = build_model(cfg)
    load_state_strict(model, state, ckpt / WEIGHTS)
    return model.to(device).eval(), cfg, meta


def load_training_state(path: str | Path) -> dict[str, Any]:
    """training_state.pt of a training checkpoint, through torch's weights-only loader (never a full unpickle)."""
    import pickle

    import torch

    file = _check_dir(path) / TRAINING_STATE
    if not file.is_file():
        raise UserError(f"{file}: missing; only training checkpoints ('last') can be resumed")
    try:
        state = torch.load(file, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError) as e:
        raise UserError(
            f"{file}: corrupt or not a training state ({_first_line(e)}); resume from another run"
        ) from e
    if not isinstance(state, dict) or not {"step", "optimizer", "rng", "loader"} <= set(state):
        raise UserError(f"{file}: not an fgdsr training state (keys missing); resume from another run")
    return state


def init_from_checkpoint(model: nn.Module, path: str | Path) -> dict[str, list[str]]:
    """Copy the tensors of checkpoint `path` into `model` by name (weights only; `cfg.init_from`).

    Tensors the source lacks (for example FGD heads when the source is an l1 / imported LapSRN) keep their
    initialisation; source tensors the model lacks (heads of an fd source loaded into an l1 model) are ignored.
    A tensor present in both with another shape (another scale, depth or width) is a one-line error.
    -> {"loaded": [...], "kept_init": [...], "ignored": [...]}
    """
    import torch

    ckpt = _check_dir(path)
    own = model.state_dict()
    state = align_keys(read_weights(ckpt), list(own))
    for k, v in state.items():
        if k in own and tuple(own[k].shape) != tuple(v.shape):
            src = read_config(ckpt)
            raise UserError(
                f"{ckpt / WEIGHTS}: cannot initialise from it ({k}: {tuple(v.shape)} in the file, "
                f"{tuple(own[k].shape)} in this model; source scale={src.scale} depth={src.depth} "
                f"channels={src.channels} layout={src.layout})"
            )
    loaded = [k for k in own if k in state]
    if not loaded:
        raise UserError(
            f"{ckpt / WEIGHTS}: no tensor name matches this model; is it a checkpoint of another model?"
        )
    with torch.no_grad():
        for k in loaded:
            own[k].copy_(state[k])
    return {
        "loaded": loaded,
        "kept_init": [k for k in own if k not in state],
        "ignored": [k for k in state if k not in own],
    }
