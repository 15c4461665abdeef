"""The pipeline YAML (`fgdsr/configs/demo.yaml` is the default) as a frozen `PipelineConfig`.

Keys: `train` (a TrainConfig YAML), `set` (field overrides), `space` (a search-space YAML or mapping), `variants`
(the loss variants compared, l1 always among them; default: the space's loss axis), `tune` (options of
`fgdsr tune`; `num_samples` = slots, each variant runs once per slot), `eval.datasets`, `benchmark` (hr_size,
precision, timing), `figures.crop`. Field values are checked where the sweep is planned (once per job); here
only names.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fgdsr.config import CONFIG_DIR, TrainConfig
from fgdsr.errors import UserError

DEMO_CONFIG = CONFIG_DIR / "demo.yaml"
TOP_KEYS = ("train", "set", "space", "variants", "tune", "eval", "benchmark", "figures")
TUNE_KEYS = (
    "gpus", "gpus_per_trial", "cpus_per_trial", "num_samples", "search", "scheduler", "address", "storage",
    "experiment", "max_failures", "seed",
)  # fmt: skip
BENCH_KEYS = ("hr_size", "precision", "warmup_ms", "min_iters", "min_time_s", "batch", "tolerance")
_FIELDS = {f.name for f in dataclasses.fields(TrainConfig)}


@dataclass(frozen=True)
class PipelineConfig:
    """A parsed pipeline YAML (paths resolved)."""

    source: str
    train: str  # TrainConfig YAML
    overrides: dict[str, Any] = field(default_factory=dict)
    space: str | dict[str, Any] | None = None  # a YAML path, or a mapping (parsed where the sweep is planned)
    variants: tuple[str, ...] = ()  # () = every loss of the space
    tune: dict[str, Any] = field(default_factory=dict)
    eval_datasets: tuple[str, ...] = ("builtin-eval",)
    bench: dict[str, Any] = field(default_factory=dict)
    crop: int = 96


def _resolve_path(value: str, base: Path, key: str, source: Path) -> str:
    """A path from the config: relative to the config file, else to fgdsr/configs/."""
    p = Path(value).expanduser()
    for cand in [p] if p.is_absolute() else [base / p, CONFIG_DIR / p, Path.cwd() / p]:
        if cand.is_file():
            return str(cand.resolve())
    raise UserError(
        f"{source}: '{key}: {value}' not found (relative to the config, fgdsr/configs/ or the cwd)"
    )


def _section(src: Path, data: dict[str, Any], key: str, allowed: tuple[str, ...]) -> dict[str, Any]:
    section = data.get(key) or {}
    if not isinstance(section, dict) or set(section) - set(allowed):
        bad = sorted(set(section) - set(allowed)) if isinstance(section, dict) else section
        raise UserError(f"{src}: '{key}' has unknown entries {bad}; allowed: {', '.join(allowed)}")
    return dict(section)


def _space(src: Path, data: dict[str, Any], space: str | Path | None) -> str | dict[str, Any] | None:
    if space is not None:
        if not Path(space).is_file():
            raise UserError(f"--space {space}: file not found")
        return str(Path(space).resolve())
    value = data.get("space")
    if isinstance(value, str):
        return _resolve_path(value, src.resolve().parent, "space", src)
    if value is None or isinstance(value, dict):
        return value
    raise UserError(f"{src}: 'space' must be a YAML path or a mapping like fgdsr/configs/space.yaml")


def _variants(src: Path, data: dict[str, Any]) -> tuple[str, ...]:
    value = data.get("variants") or []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise UserError(f"{src}: 'variants' takes a list of losses, e.g. [l1, fd]")
    return tuple(dict.fromkeys(["l1", *value])) if value else ()


def _eval_and_crop(src: Path, data: dict[str, Any]) -> tuple[tuple[str, ...] | None, int]:
    ev = data.get("eval") or {}
    if not isinstance(ev, dict) or set(ev) - {"datasets"}:
        raise UserError(f"{src}: 'eval' takes 'datasets: [NAME, …]'")
    datasets = None
    if "datasets" in ev:
        ds = ev["datasets"]
        datasets = (ds,) if isinstance(ds, str) else tuple(str(d) for d in ds)
    figs = data.get("figures") or {}
    if not isinstance(figs, dict) or set(figs) - {"crop"}:
        raise UserError(f"{src}: 'figures' takes 'crop: PIXELS'")
    crop = int(figs.get("crop", 96))
    if crop < 8:
        raise UserError(f"{src}: figures.crop must be at least 8 pixels")
    return datasets, crop


def load_pipeline_config(
    path: str | Path | None = None, space: str | Path | None = None, overrides: dict[str, Any] | None = None
) -> PipelineConfig:
    """Read and validate a pipeline YAML (None: the shipped CPU demo), with a `--space` file and `--set` fields."""
    from fgdsr.config import read_yaml_mapping

    src = Path(path) if path is not None else DEMO_CONFIG
    data = read_yaml_mapping(
        src,
        f"--config {src}: file not found; pass a pipeline YAML like fgdsr/configs/demo.yaml",
        f"with keys {', '.join(TOP_KEYS)}",
    )
    unknown = sorted(set(data) - set(TOP_KEYS))
    if unknown:
        raise UserError(f"{src}: unknown keys {unknown}; a pipeline config has {', '.join(TOP_KEYS)}")
    if "train" not in data or not isinstance(data["train"], str):
        raise UserError(f"{src}: 'train' must name a TrainConfig YAML (e.g. train: tune-demo.yaml)")
    sets = data.get("set") or {}
    if not isinstance(sets, dict):
        raise UserError(f"{src}: 'set' must be a mapping of TrainConfig fields")
    sets = {**sets, **(overrides or {})}
    bad = sorted(set(sets) - _FIELDS)
    if bad:
        raise UserError(
            f"{src}: unknown config field '{bad[0]}' in 'set' / --set (known: {', '.join(sorted(_FIELDS))})"
        )
    datasets, crop = _eval_and_crop(src, data)
    return PipelineConfig(
        source=str(src), train=_resolve_path(data["train"], src.resolve().parent, "train", src), overrides=sets,
        space=_space(src, data, space), variants=_variants(src, data), tune=_section(src, data, "tune", TUNE_KEYS),
        eval_datasets=datasets or ("builtin-eval",), bench=_section(src, data, "benchmark", BENCH_KEYS), crop=crop,
    )  # fmt: skip
