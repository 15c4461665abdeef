"""The search space of a sweep: a YAML file over `TrainConfig` fields -> a Ray Tune `param_space`.

The file (default `fgdsr/configs/space.yaml`) has a `space:` mapping from config field to a constant or to
one domain (`choice`, `uniform`, `loguniform`, `randint`) and an `asha:` mapping (grace period, reduction
factor, in training steps). List values (anchor areas) travel through Tune as strings like "3,5,7" because
Optuna's categorical distribution only holds scalars; `TrainConfig` reads such a string back as a list.
"""

from __future__ import annotations

import dataclasses
import math
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fgdsr.config import CONFIG_DIR, TrainConfig, apply_overrides
from fgdsr.errors import UserError

DEFAULT_SPACE = CONFIG_DIR / "space.yaml"
DOMAINS = ("choice", "uniform", "loguniform", "randint")
_FIELDS = {f.name for f in dataclasses.fields(TrainConfig)}


@dataclass(frozen=True)
class SearchSpace:
    """A parsed search space: `params[name]` is a constant or `(domain, args)`."""

    params: dict[str, Any]
    grace_period: int = 50
    reduction_factor: int = 2
    source: str = ""
    forced: list[dict[str, Any]] = field(default_factory=list)  # points Tune evaluates first

    def describe(self) -> dict[str, Any]:
        """JSON-friendly view (for the plan, the parent MLflow run and `--json`)."""
        out: dict[str, Any] = {}
        for name, spec in self.params.items():
            out[name] = {spec[0]: spec[1]} if isinstance(spec, tuple) else spec
        return {
            "params": out,
            "asha": {"grace_period": self.grace_period, "reduction_factor": self.reduction_factor},
            "forced": self.forced,
            "source": self.source,
        }


def encode(value: Any) -> Any:
    """A config value as Tune/Optuna carries it: lists become "3,5,7"."""
    if isinstance(value, (list, tuple)):
        return ",".join(str(v) for v in value)
    return value


def load_space(path: str | Path | None = None) -> SearchSpace:
    """Read and validate a search-space YAML (None: the shipped default)."""
    from fgdsr.config import read_yaml_mapping

    path = Path(path) if path is not None else DEFAULT_SPACE
    data = read_yaml_mapping(
        path,
        f"--space {path}: file not found; pass a YAML like fgdsr/configs/space.yaml",
        "with a 'space:' mapping of config fields",
    )
    return space_from_mapping(data, str(path))


def space_from_mapping(data: dict[str, Any], source: str) -> SearchSpace:
    """Validate a search space given as a mapping (`space:` and `asha:`); `source` names it in errors."""
    if not isinstance(data.get("space", {}), dict):
        raise UserError(f"{source}: expected a mapping with a 'space:' mapping of config fields")
    unknown_top = set(data) - {"space", "asha"}
    if unknown_top:
        raise UserError(f"{source}: unknown top-level keys {sorted(unknown_top)}; use 'space' and 'asha'")
    params: dict[str, Any] = {}
    for name, spec in (data.get("space") or {}).items():
        params[name] = _parse_param(source, name, spec)
    asha = data.get("asha") or {}
    if not isinstance(asha, dict) or set(asha) - {"grace_period", "reduction_factor"}:
        raise UserError(f"{source}: 'asha' takes grace_period and reduction_factor (training steps)")
    space = SearchSpace(
        params=params,
        grace_period=int(asha.get("grace_period", 50)),
        reduction_factor=int(asha.get("reduction_factor", 2)),
        source=source,
    )
    if space.grace_period < 1 or space.reduction_factor < 2:
        raise UserError(f"{source}: asha.grace_period must be >= 1 and asha.reduction_factor >= 2")
    return space


def _parse_param(path: str, name: str, spec: Any) -> Any:
    if name not in _FIELDS:
        raise UserError(
            f"{path}: unknown config field '{name}' in space; known: {', '.join(sorted(_FIELDS))}"
        )
    if not isinstance(spec, dict):
        return spec  # a constant
    if len(spec) != 1 or next(iter(spec)) not in DOMAINS:
        raise UserError(
            f"{path}: field '{name}': use exactly one of {', '.join(DOMAINS)}, e.g. {{choice: [a, b]}}"
        )
    domain, args = next(iter(spec.items()))
    if not isinstance(args, list) or not args:
        raise UserError(f"{path}: field '{name}': '{domain}' takes a non-empty list")
    if domain != "choice":
        if len(args) != 2 or not all(isinstance(a, (int, float)) for a in args) or not args[0] < args[1]:
            raise UserError(f"{path}: field '{name}': '{domain}' takes [low, high] numbers with low < high")
        if domain == "loguniform" and args[0] <= 0:
            raise UserError(f"{path}: field '{name}': loguniform needs low > 0")
    return (domain, list(args))


def force_variants(
    space: SearchSpace, variants: list[str] | tuple[str, ...], base: TrainConfig | None = None
) -> SearchSpace:
    """Make sure each loss variant in `variants` is in the space's loss axis and runs first (the l1 baseline).

    A forced point is complete (Optuna's warm start wants every sampled field): the base config's value where
    the domain holds it, else the domain's centre. A space without a `loss` entry sweeps other fields of the
    config's own loss: nothing is forced then.
    """
    if not variants or "loss" not in space.params:
        return space
    params = dict(space.params)
    spec = params["loss"]
    values = list(spec[1]) if isinstance(spec, tuple) else [spec]
    for v in variants:
        if v not in values:
            values.append(v)
    params["loss"] = ("choice", values) if len(values) > 1 else values[0]
    if len(values) == 1:
        return dataclasses.replace(space, params=params)
    forced = list(space.forced)
    for v in variants:
        point: dict[str, Any] = {}
        for name, p in params.items():
            if name == "loss":
                point[name] = v
            elif isinstance(p, tuple):
                point[name] = _default_in(p, getattr(base, name) if base is not None else None)
        forced.append(point)
    return dataclasses.replace(space, params=params, forced=forced)


def _default_in(spec: tuple[str, list], current: Any) -> Any:
    """`current` if the domain holds it, else the domain's centre (encoded as Tune carries it)."""
    domain, args = spec
    if domain == "choice":
        return encode(current if current in args else args[0])
    lo, hi = args
    if isinstance(current, (int, float)) and not isinstance(current, bool) and lo <= current < hi:
        return current
    if domain == "uniform":
        return (lo + hi) / 2
    if domain == "loguniform":
        return math.sqrt(lo * hi)
    return int(lo)


def validate_against(space: SearchSpace, base: TrainConfig) -> None:
    """Apply every extreme of the space to `base` once so a bad value fails now, not in a trial."""
    for name, spec in space.params.items():
        candidates = spec[1] if isinstance(spec, tuple) else [spec]
        if isinstance(spec, tuple) and spec[0] == "randint":
            candidates = [spec[1][0], spec[1][1] - 1]
        for value in candidates:
            try:
                apply_overrides(base, {name: encode(value)})
            except UserError as e:
                raise UserError(f"{space.source}: field '{name}' value {value!r}: {e}") from e


def to_param_space(space: SearchSpace, search: str) -> dict[str, Any]:
    """The Ray Tune `param_space` (`search` = optuna | random | grid)."""
    from ray import tune

    out: dict[str, Any] = {}
    for name, spec in space.params.items():
        if not isinstance(spec, tuple):
            out[name] = encode(spec)
            continue
        domain, args = spec
        if search == "grid":
            if domain != "choice":
                raise UserError(
                    f"{space.source}: field '{name}': --search grid needs 'choice' values, not '{domain}'"
                )
            out[name] = tune.grid_search([encode(v) for v in args])
        elif domain == "choice":
            out[name] = tune.choice([encode(v) for v in args])
        elif domain == "uniform":
            out[name] = tune.uniform(float(args[0]), float(args[1]))
        elif domain == "loguniform":
            out[name] = tune.loguniform(float(args[0]), float(args[1]))
        else:
            out[name] = tune.randint(int(args[0]), int(args[1]))
    return out


def grid_size(space: SearchSpace) -> int:
    """Number of points in the grid (product of the choice lengths)."""
    n = 1
    for spec in space.params.values():
        if isinstance(spec, tuple):
            n *= len(spec[1])
    return n


def variants(space: SearchSpace, base: TrainConfig) -> list[str]:
    """The loss variants a sweep over `space` runs (its `loss` axis, else the base config's loss)."""
    spec = space.params.get("loss", base.loss)
    return [str(v) for v in spec[1]] if isinstance(spec, tuple) else [str(spec)]


def _sample(spec: tuple[str, list], rng: random.Random) -> Any:
    domain, args = spec
    if domain == "choice":
        return encode(rng.choice(args))
    if domain == "uniform":
        return rng.uniform(float(args[0]), float(args[1]))
    if domain == "loguniform":
        return math.exp(rng.uniform(math.log(args[0]), math.log(args[1])))
    return rng.randrange(int(args[0]), int(args[1]))


def paired_points(
    space: SearchSpace, slots: int, base: TrainConfig, seed: int = 0
) -> tuple[dict[str, Any], ...]:
    """`slots` draws of every sampled field, each run once per loss variant: a like-for-like comparison.

    Slot 0 is the base config's own values (the domain's centre where the base value is outside it); the
    other slots are random draws (seeded). Within a slot the variants differ only in `loss`, so the baseline
    gets as many trials as each FGD variant, on the same learning rates and batch sizes.
    """
    sampled = {n: p for n, p in space.params.items() if isinstance(p, tuple) and n != "loss"}
    rng = random.Random(seed)
    points = []
    for slot in range(slots):
        if slot == 0:
            values = {n: _default_in(p, getattr(base, n)) for n, p in sampled.items()}
        else:
            values = {n: _sample(p, rng) for n, p in sampled.items()}
        for v in variants(space, base):
            points.append({**values, "loss": v} if "loss" in space.params else dict(values))
    return tuple(points)


# Fields only an FGD variant uses: an l1 trial's label leaves them out.
FGD_FIELDS = frozenset(
    {"bins", "areas", "static_area", "head_levels", "head_kernel", "anchor_source", "fgd_head", "alpha",
     "alpha_warmup_steps", "beta", "gamma", "class_patch"}
)  # fmt: skip
_SYMBOLS = {"alpha": "α", "beta": "β", "gamma": "γ", "bins": "K", "batch_size": "bs"}


def _short(value: Any) -> str:
    """A sampled value as a person reads it: 0.12, 2e-3, 16, 3,5,7."""
    if isinstance(value, float):
        if value != 0 and abs(value) < 0.01:
            mantissa, exp = f"{value:.1e}".split("e")
            return f"{mantissa.rstrip('0').rstrip('.')}e{int(exp)}"
        return f"{value:.2g}"
    return str(encode(value))


def sampled_fields(space: SearchSpace) -> tuple[str, ...]:
    """The fields the search varies (a domain, not a constant)."""
    return tuple(n for n, p in space.params.items() if isinstance(p, tuple))


def trial_label(config: dict[str, Any], variant: str, fields: tuple[str, ...]) -> str:
    """What a person compares between trials: `fd α=0.12 lr=2e-3` (`fields` of `config`; l1 shows no FGD field)."""
    parts = [variant]
    for name, value in config.items():
        if name == "loss" or name not in fields or (variant == "l1" and name in FGD_FIELDS):
            continue
        parts.append(f"{_SYMBOLS.get(name, name)}={_short(value)}")
    return " ".join(parts)
