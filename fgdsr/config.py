"""One training run = one `TrainConfig`: a flat dataclass, loaded from YAML, overridable with `key=value`.

Flat on purpose (nanoGPT style): every field is visible in one place, `--set lr=2e-4` needs no dotted paths,
and a Ray Tune search space is just a dict over these names.
"""

from __future__ import annotations

import dataclasses
import json
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fgdsr.errors import UserError
from fgdsr.precision import LEGACY_MIXED_PRECISION, PRECISIONS

CONFIG_DIR = Path(__file__).resolve().parent / "configs"


@dataclass
class TrainConfig:
    # --- model (fgdsr/models) ---
    model: str = "lapsrn"  # lapsrn | srcnn | vdsr (a plain dict in fgdsr.models, no registry)
    layout: str = "official"  # LapSRN: official (3x3 feature up-conv, no image-branch bias) | port (4x4)
    scale: int = 4  # 2, 3 (x4 pyramid resized bicubically), 4, 8
    depth: int | None = None  # convs per pyramid level; None = 10 for x2/x4, 5 for x8 (LapSRN paper)
    channels: int = 64
    weight_norm: bool = False  # the FGD paper applies weight normalisation to all convs
    # --- loss (fgdsr/losses): the paper's Table 1 rows ---
    loss: str = "l1"  # l1 (Baseline) | cs (static anchor area) | fd (dynamic area, Class-Module) | aux
    bins: int = 32  # K, Eq. 1-2
    areas: list[int] = field(default_factory=lambda: [3, 5, 7])  # FD anchor areas in bins (M = 3 classes)
    static_area: int = 5  # CS anchor area in bins
    head_levels: str = "last"  # classification head at the last pyramid level or at all levels
    head_kernel: int = 1  # 1x1 (cheap at inference) or 3x3 classification head
    anchor_source: str = (
        "pred"  # regression around the predicted bin (pred) or the GT bin (gt, teacher forcing)
    )
    # FGD head (docs/LOSS.md, "The head"): prior (1x1 conv on F + a Laplace prior centred on the regression I) |
    # input (the classifier sees I itself: 1x1 conv over [F, I], initialised to a Gaussian prior) | window (the
    # prior head over the 2w+1 bins around bin(I), cheaper at inference) | literal (no prior, S = A + h*tanh(offset
    # head): the paper word for word, measured to fail). Classes in fgdsr.models.fgd.HEADS.
    fgd_head: str = "prior"
    # labels of L_c1 (Eq. 3): onehot (the GT bin) | twohot (the two bins around the GT value, decoded by the
    # expected anchor: sub-bin precision) | ordinal (DORN: K-1 "z >= t_k" outputs, decoded by counting)
    bin_labels: str = "onehot"
    # how S is decoded in training: hard (argmax anchor, detached: L_r never reaches the classifier) | soft (the
    # expectation over the class probabilities of the in-area projection: L_r trains the head) | st (hard value,
    # soft gradient). Inference is always hard. soft is the default: with alpha 0.004 it measured no different
    # from l1 in Table 1 (RESULTS.md), the only FGD setting that did; st collapsed once in the screen.
    train_decode: str = "soft"
    head_detach: bool = False  # the head on detached features: L_c1 cannot change the trunk
    bin_range: str = "full"  # full: K bins over [0, 1] (Y never leaves [16, 235]: bins 0, 1, 30, 31 stay empty) | studio: over [16, 235]
    level_weights: str = "equal"  # L_r over pyramid levels: equal | pixels (LapSRN's sum: finest level 4x)
    # weight of L_c1 (Eq. 6) on this code's [0, 1] scale = the paper's alpha / 255 (docs/LOSS.md): 0.004 is the
    # paper's alpha = 1. The CE gradient through the shared features damages the trunk: alpha 0.1 cost 0.23 dB
    # (cs, fd) and 0.15 dB (aux) in Table 1 at 3000 steps, 0.004 measured no different from l1 (RESULTS.md).
    alpha: float = 0.004
    alpha_warmup_steps: int = 0  # linear warm-up of alpha from 0
    # weight of L_c2 (Eq. 4, 6) and of ClassSR's average (balance) loss on the Class-Module: ClassSR's ratios to L1
    beta: float = 5e-4
    gamma: float = 3e-3
    # The Class-Module's own Adam group (SRModel.optim_groups): eps tiny, so its step does not depend on the
    # absolute scale of its gradients (1e-10..1e-9 at these weights, below the default eps 1e-8); lr x scale.
    class_eps: float = 1e-16
    class_lr_scale: float = 1.0
    class_patch: int = 32  # LR sub-image size of the Class-Module (ClassSR: 32)
    charbonnier_eps: float = 1e-3  # LapSRN's robust L1; 0 = plain L1
    # --- data (fgdsr/data) ---
    train_dataset: str = "builtin-train"
    val_dataset: str = "builtin-val"  # selection never on a test set (builtin-eval is the demo's test set)
    data_root: str | None = None  # None: env FGDSR_DATA_ROOT, else ./datasets
    patch_size: int = 128  # HR patch side
    batch_size: int = 64
    workers: int = 0
    random_downscale: bool = True  # LapSRN's augmentation: HR image scaled by U(0.5, 1.0)
    # --- optimisation (fgdsr/train.py) ---
    lr: float = 1e-3
    lr_schedule: str = "step"  # step (halve every lr_step iterations, the paper) | cosine
    lr_step: int = 200_000
    lr_gamma: float = 0.5
    weight_decay: float = 0.0
    max_steps: int = 1000
    grad_accum: int = 1
    seed: int = 0
    val_every: int = 100
    val_max_images: int | None = None  # cap validation images (speed); None = all
    log_every: int = 10
    init_from: str | None = None  # checkpoint directory to start from (weights only)
    # ==== training block (fgdsr/train.py, fgdsr/data/sampler.py, fgdsr/precision.py) =========================
    # auto: bf16 on Ampere+ GPUs, fp16 + gradient scaler on Volta/Turing, fp32 on CPU | fp32 | bf16 | fp16.
    # Replaces `mixed_precision: no|bf16|fp16` (old config.json files are mapped: LEGACY_FIELDS).
    precision: str = "auto"
    # EMA of the weights, 0 = off (BasicSR: 0.999); validation, best/last and so export use the EMA copy
    ema_decay: float = 0.0
    ema_start: int = 0  # the EMA starts after this many steps (until then it equals the weights)
    compile: bool = False  # torch.compile of the model's training forward (its backward through AOTAutograd)
    channels_last: bool = False  # NHWC memory format for the model and the batches
    # Where the LR input and the per-level targets are made from the HR patch (MATLAB bicubic): device (batched,
    # on the training device; the workers only crop, resize by the random downscale, flip, rotate; on CPU the
    # same bits as loader and 1.1-1.9x the patches per core, docs/BENCHMARKS.md) | loader (per sample, in workers)
    pyramid_on: str = "device"
    augment: str = "dihedral"  # dihedral (h/v flips + rot90: all 8) | flip (h/v flips only, the FGD paper)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def replace(self, **changes: Any) -> TrainConfig:
        return apply_overrides(self, changes)


_FIELDS = {f.name: f for f in dataclasses.fields(TrainConfig)}
_HINTS = typing.get_type_hints(TrainConfig)


def _coerce(name: str, value: Any) -> Any:
    """Convert `value` (a YAML/JSON value or a CLI string) to the type of field `name`."""
    hint = _HINTS[name]
    args = typing.get_args(hint)
    optional = type(None) in args
    base = (
        next((a for a in args if a is not type(None)), hint)
        if args and (typing.get_origin(hint) in (typing.Union, types.UnionType))
        else hint
    )
    if isinstance(value, str):
        text = value.strip()
        if optional and text.lower() in ("none", "null", ""):
            return None
        if base is bool:
            if text.lower() in ("1", "true", "yes", "on"):
                return True
            if text.lower() in ("0", "false", "no", "off"):
                return False
            raise UserError(f"config field '{name}': expected true/false, got '{value}'")
        if typing.get_origin(base) is list:
            try:
                value = json.loads(text if text.startswith("[") else f"[{text}]")
            except json.JSONDecodeError as e:
                raise UserError(f"config field '{name}': expected a list like [3,5,7], got '{value}'") from e
        else:
            value = text
    if value is None:
        if optional:
            return None
        raise UserError(f"config field '{name}' may not be null")
    try:
        if base is bool:
            if not isinstance(value, bool):
                raise ValueError
            return value
        if base is int:
            if isinstance(value, float) and not value.is_integer():
                raise ValueError
            return int(float(value)) if isinstance(value, str) else int(value)
        if base is float:
            return float(value)
        if base is str:
            return str(value)
        if typing.get_origin(base) is list:
            (item,) = typing.get_args(base)
            return [item(v) for v in value]
    except (TypeError, ValueError) as e:
        raise UserError(f"config field '{name}': cannot read '{value}' as {base}") from e
    return value


def apply_overrides(cfg: TrainConfig, changes: dict[str, Any]) -> TrainConfig:
    """A copy of `cfg` with `changes` applied; unknown names are a one-line error naming the field."""
    out = dataclasses.replace(cfg)
    for key, raw in changes.items():
        if key in LEGACY_FIELDS:
            new, values = LEGACY_FIELDS[key]
            mapping = ", ".join(f"{a} -> {b}" for a, b in values.items())
            raise UserError(f"config field '{key}' is now '{new}' ({mapping}; or auto)")
        if key not in _FIELDS:
            raise UserError(f"unknown config field '{key}' (known: {', '.join(_FIELDS)})")
        setattr(out, key, _coerce(key, raw))
    validate(out)
    return out


def config_from_dict(data: dict[str, Any], source: str) -> TrainConfig:
    """The one way to rebuild a TrainConfig from stored values (a checkpoint's config.json, a sidecar, a Tune trial).

    Every key must be a known field with a valid value: anything else is a one-line UserError naming `source`
    (a file or record written by another fgdsr version is refused, never silently reinterpreted).
    """
    try:
        return apply_overrides(TrainConfig(), upgrade_legacy(data))
    except UserError as e:
        raise UserError(f"{source}: {e}; was it written by another fgdsr version?") from e


def upgrade_legacy(data: dict[str, Any]) -> dict[str, Any]:
    """Stored values with renamed fields (LEGACY_FIELDS) mapped to today's names; other keys unchanged."""
    out = dict(data)
    for old, (new, values) in LEGACY_FIELDS.items():
        if old not in out:
            continue
        value = out.pop(old)
        if new in out:
            raise UserError(f"both '{old}' and its new name '{new}' are set; keep only '{new}'")
        if value not in values:
            raise UserError(f"config field '{old}': unknown '{value}' ({', '.join(values)})")
        out[new] = values[value]
    return out


def parse_set_args(items: list[str] | None) -> dict[str, str]:
    """`["lr=1e-4", "loss=fd"]` -> `{"lr": "1e-4", "loss": "fd"}` (values converted later by type)."""
    changes: dict[str, str] = {}
    for item in items or []:
        if "=" not in item:
            raise UserError(f"--set '{item}': expected key=value, for example --set loss=fd")
        key, value = item.split("=", 1)
        changes[key.strip()] = value
    return changes


def read_yaml_mapping(path: Path, not_found: str, expected: str) -> dict[str, Any]:
    """The top-level mapping of a YAML file (empty file: {}); one-line UserErrors otherwise.

    not_found: the whole message for a missing file; expected: what the mapping should hold (for the message).
    Shared by training configs, search spaces (orchestrator/space.py) and pipeline configs.
    """
    import yaml

    if not path.is_file():
        raise UserError(not_found)
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        first = str(e).splitlines()[0] if str(e) else "syntax error"
        raise UserError(f"{path}: not valid YAML ({first})") from e
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a mapping {expected}")
    return data


def load_config(path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> TrainConfig:
    """Read a YAML config (None: the shipped tiny CPU config) and apply overrides."""
    path = Path(path) if path is not None else CONFIG_DIR / "tiny.yaml"
    data = read_yaml_mapping(path, f"config file not found: {path}", "of config fields at the top level")
    cfg = apply_overrides(TrainConfig(), data)
    return apply_overrides(cfg, overrides or {})


# ------------------------------------------------------------------------------------------- allowed values


@dataclass(frozen=True)
class Range:
    """An interval of allowed numbers: lo / hi (None: unbounded), open or closed at each end; NaN is refused."""

    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False
    hi_open: bool = False

    def __contains__(self, x: float) -> bool:
        if x != x or x in (math.inf, -math.inf):  # NaN / inf are never a valid setting
            return False
        if self.lo is not None and (x <= self.lo if self.lo_open else x < self.lo):
            return False
        return not (self.hi is not None and (x >= self.hi if self.hi_open else x > self.hi))

    def __str__(self) -> str:
        lo, hi = _num(self.lo), _num(self.hi)
        if self.hi is None:
            return f"{'>' if self.lo_open else '>='} {lo}"
        if self.lo is None:
            return f"{'<' if self.hi_open else '<='} {hi}"
        return f"{'(' if self.lo_open else '['}{lo}, {hi}{')' if self.hi_open else ']'}"


def _num(x: float | None) -> str:
    if x is None:
        return ""
    return str(int(x)) if float(x).is_integer() else f"{x:g}"


AT_LEAST_0, AT_LEAST_1, POSITIVE = Range(0), Range(1), Range(0, lo_open=True)

# Field -> allowed range, for every int / float field (tests/test_config.py checks that none is missing).
# Extend it with each new numeric field; `validate` checks it before the name / cross-field checks.
RANGES: dict[str, Range] = {
    # model
    "scale": Range(2, 8),  # and one of 2, 3, 4, 8 (validate)
    "depth": AT_LEAST_1,
    "channels": AT_LEAST_1,
    # loss
    "bins": Range(2),
    "static_area": AT_LEAST_1,  # and odd (validate)
    "head_kernel": Range(1, 3),  # and 1 or 3 (validate)
    "alpha": AT_LEAST_0,
    "alpha_warmup_steps": AT_LEAST_0,
    "beta": AT_LEAST_0,
    "gamma": AT_LEAST_0,
    "class_patch": AT_LEAST_1,  # and the LR training patch a whole number of tiles for fd (check_whole_class_tiles)
    "class_eps": POSITIVE,  # the Class-Module's Adam eps (default 1e-16: its gradients are ~1e-9)
    "class_lr_scale": POSITIVE,
    "charbonnier_eps": AT_LEAST_0,
    # data
    "patch_size": AT_LEAST_1,  # and a multiple of scale (validate), not above the largest image (sampler)
    "batch_size": AT_LEAST_1,
    "workers": AT_LEAST_0,
    # optimisation
    "lr": POSITIVE,
    "lr_step": AT_LEAST_1,
    "lr_gamma": Range(0, 1, lo_open=True),
    "weight_decay": AT_LEAST_0,
    "max_steps": AT_LEAST_1,
    "grad_accum": AT_LEAST_1,
    "seed": Range(0, 2**32 - 1),  # numpy's legacy seeding (accelerate.set_seed) takes 32-bit seeds
    "val_every": AT_LEAST_1,
    "val_max_images": AT_LEAST_1,
    "log_every": AT_LEAST_1,
    # training block
    "ema_decay": Range(0, 1, hi_open=True),  # 0 = off
    "ema_start": AT_LEAST_0,
}

# Fields of the training block that take one of a few names (the older fields are checked in `validate`).
CHOICES: dict[str, tuple[str, ...]] = {
    "precision": PRECISIONS,
    "pyramid_on": ("loader", "device"),
    "augment": ("dihedral", "flip"),
}

# Renamed fields: old name -> (new name, old value -> new value). Stored configs (config.json of older
# checkpoints, sidecars, Tune trials) are upgraded by `config_from_dict`; YAML and --set get a one-line hint.
LEGACY_FIELDS: dict[str, tuple[str, dict[str, str]]] = {
    "mixed_precision": ("precision", LEGACY_MIXED_PRECISION),  # no -> fp32, bf16, fp16
}


def check_ranges(cfg: TrainConfig) -> None:
    """Every numeric field against RANGES (None passes for optional fields); one line naming field and range."""
    for name, allowed in RANGES.items():
        value = getattr(cfg, name)
        if value is not None and value not in allowed:
            raise UserError(f"config field '{name}': {value!r} is out of range (allowed: {allowed})")


def validate(cfg: TrainConfig) -> None:
    """Range checks (RANGES), then name and cross-field checks, with one-line messages."""
    check_ranges(cfg)
    if cfg.model not in ("lapsrn", "srcnn", "vdsr"):
        raise UserError(f"config field 'model': unknown '{cfg.model}' (lapsrn, srcnn, vdsr)")
    if cfg.layout not in ("official", "port"):
        raise UserError(f"config field 'layout': unknown '{cfg.layout}' (official, port)")
    if cfg.scale not in (2, 3, 4, 8):
        raise UserError(f"config field 'scale': {cfg.scale} is not supported (2, 3, 4, 8)")
    if cfg.loss not in ("l1", "cs", "fd", "aux"):
        raise UserError(f"config field 'loss': unknown '{cfg.loss}' (l1, cs, fd, aux)")
    if cfg.bins < 2:
        raise UserError("config field 'bins': K must be at least 2")
    if any(a < 1 or a % 2 == 0 for a in [*cfg.areas, cfg.static_area]):
        raise UserError("config fields 'areas'/'static_area': anchor areas are odd numbers of bins (3, 5, 7)")
    if cfg.head_levels not in ("last", "all"):
        raise UserError(f"config field 'head_levels': unknown '{cfg.head_levels}' (last, all)")
    if cfg.head_kernel not in (1, 3):
        raise UserError("config field 'head_kernel': 1 or 3")
    _check_fgd(cfg)
    if cfg.anchor_source not in ("pred", "gt"):
        raise UserError(f"config field 'anchor_source': unknown '{cfg.anchor_source}' (pred, gt)")
    if cfg.lr_schedule not in ("step", "cosine"):
        raise UserError(f"config field 'lr_schedule': unknown '{cfg.lr_schedule}' (step, cosine)")
    for name, allowed in CHOICES.items():
        if getattr(cfg, name) not in allowed:
            raise UserError(f"config field '{name}': unknown '{getattr(cfg, name)}' ({', '.join(allowed)})")
    if cfg.patch_size % cfg.scale:
        raise UserError(f"config field 'patch_size': {cfg.patch_size} is not a multiple of scale {cfg.scale}")


def _check_fgd(cfg: TrainConfig) -> None:
    """The FGD readings' fields (fgdsr.models.fgd): known values and the combinations that are implemented."""
    choices = {
        "fgd_head": ("prior", "input", "window", "literal"),
        "bin_labels": ("onehot", "twohot", "ordinal"),
        "train_decode": ("hard", "soft", "st"),
        "bin_range": ("full", "studio"),
        "level_weights": ("equal", "pixels"),
    }
    for name, allowed in choices.items():
        if getattr(cfg, name) not in allowed:
            raise UserError(f"config field '{name}': unknown '{getattr(cfg, name)}' ({', '.join(allowed)})")
    if cfg.head_detach and (cfg.loss not in ("cs", "fd") or cfg.fgd_head == "literal"):
        raise UserError(
            "config field 'head_detach': needs loss cs or fd and fgd_head prior, input or window (aux: the head "
            "would change nothing; literal: the trunk's finest level would get no gradient)"
        )
    if cfg.bin_labels != "onehot" and cfg.fgd_head in ("window", "literal"):
        raise UserError(
            f"config field 'bin_labels': {cfg.bin_labels} needs fgd_head prior or input ({cfg.fgd_head} is onehot only)"
        )


def check_whole_class_tiles(cfg: TrainConfig) -> None:
    """Training FD: the LR patch side must be a multiple of class_patch, so that every Class-Module tile the
    module trains on is real content (LR 16 < 32 made 75 % of each tile replicate padding, while validation
    tiles are whole). A training-time check (called by the loss): inference and profiling take any size."""
    lr_side = cfg.patch_size // cfg.scale
    if cfg.loss == "fd" and lr_side % cfg.class_patch:
        raise UserError(
            f"config field 'class_patch': {cfg.class_patch} does not divide the LR patch side {lr_side} "
            f"(patch_size {cfg.patch_size} / scale {cfg.scale}): the Class-Module would train on padding; "
            f"use {_class_patch_hint(lr_side)}a patch_size that is a multiple of {cfg.class_patch * cfg.scale}"
        )


def _class_patch_hint(lr_side: int) -> str:
    """'class_patch P or ' for the largest multiple of 4 (the module's stride) up to 32 (ClassSR) dividing the LR
    side; '' when none does (an LR side that is not a multiple of 4)."""
    p = next((p for p in range(32, 3, -4) if lr_side % p == 0), None)
    return f"class_patch {p} or " if p else ""
