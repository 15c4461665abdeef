"""Params, kernel weights and Mult-Adds of an SR model, in the SR literature's convention (CARN, FGD Table 2).

- `params`: every trainable value of the inference graph (torch's count; heads that only train, like `aux`'s
  classifier, are not part of the deployed model and are left out).
- `weights`: kernel weights only (conv, transposed conv and linear kernels; no biases, no scalars): the
  literature's "Params" (VDSR's 665K = 664,704 weights).
- `mult_adds`: Σ over convolutions of k²·C_in·C_out/groups per output position (+ M·N·K per matmul), for the
  LR input whose output is the HR size (1280x720 by default); biases and element-wise ops are not counted.
  Transposed convs: `true` counts per *input* position (what a transposed conv computes); `naive` per output
  position of the ×stride map (what thop/torchinfo report and what reproduces CARN's 149.4G for LapSRN ×4).
- `elementwise`: the element-wise work the Mult-Adds hide: Σ over every other executed op (activations, sums,
  argmax, gather, tanh, pooling, resizing, copies; views excluded) of the largest tensor it reads or writes,
  i.e. elements touched once. An argmax over K channels counts K per pixel.

Counting runs the model once on the meta device (shapes only, no arithmetic, any size in milliseconds) under a
`TorchDispatchMode` that sees every aten op, so the FGD heads (K-channel classifier, Class-Module on 32x32
sub-images, argmax/gather/tanh) are counted as executed, with no per-architecture formula. If a model cannot
run on meta, the count falls back to a real CPU run at the same size.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fgdsr.errors import UserError
from trt.shapes import Size, hr_of, lr_size

CONVENTIONS = ("true", "naive")
REFERENCE_MODELS = ("srcnn", "vdsr", "lapsrn")
DEFAULT_HR = Size(height=720, width=1280)  # the literature's Mult-Adds are quoted for a 1280x720 output


@dataclass(frozen=True)
class Counts:
    """Counts of one inference forward (all integers), from `count`."""

    params: int
    weights: int
    mult_adds_true: int
    mult_adds_naive: int
    elementwise: int
    by_op: dict[str, int] = field(default_factory=dict)  # element-wise work per aten op name
    convs: list[dict[str, Any]] = field(default_factory=list)  # one row per conv/matmul call

    def mult_adds(self, convention: str) -> int:
        return self.mult_adds_true if convention == "true" else self.mult_adds_naive


@dataclass(frozen=True)
class Complexity:
    """What `complexity` measured: the model's name, scale, the HR output size counted, and the counts."""

    model: str
    scale: int
    hr_size: Size
    counts: Counts
    convention: str = "true"

    def record(self) -> dict[str, Any]:
        """The issue-5 JSON record: model, scale, hr_size [W, H], params, weights, mult_adds, elementwise."""
        c = self.counts
        return {"model": self.model, "scale": self.scale, "hr_size": [self.hr_size.width, self.hr_size.height],
                "params": c.params, "weights": c.weights, "mult_adds": c.mult_adds(self.convention),
                "elementwise": c.elementwise}  # fmt: skip


def _prod(xs) -> int:
    return int(math.prod(int(x) for x in xs))


class _Tally:
    """What `count` accumulates while the forward runs: one `record(func, args, kwargs, out)` per aten op."""

    def __init__(self, param_ids: dict) -> None:
        import torch

        aten = torch.ops.aten
        self.torch = torch
        self.param_ids = param_ids
        self.used: dict[int, Any] = {}
        # views of parameters (a 1x1 head's weight reshaped for a GEMM, fgd.AnchorHead.infer): a matmul on one is a
        # layer's matmul. Kept as objects, not just ids, so that no id is reused by a freed tensor mid-count.
        self.weight_views: dict[int, Any] = {}
        self.conv_ops = {aten.convolution.default}
        self.accumulate_ops = {
            aten.addmm.default,
            aten.baddbmm.default,
            aten.baddbmm_.default,
        }  # (input, a, b)
        self.matmul_ops = {aten.mm.default, aten.bmm.default, *self.accumulate_ops}
        self.true = self.naive = self.elementwise = 0
        self.by_op: dict[str, int] = defaultdict(int)
        self.convs: list[dict[str, Any]] = []

    def is_weight(self, t) -> bool:
        return id(t) in self.param_ids or id(t) in self.weight_views

    def record(self, func, args, kwargs, out) -> None:
        flat_in = [
            a
            for a in self.torch.utils._pytree.tree_leaves((args, kwargs))
            if isinstance(a, self.torch.Tensor)
        ]
        for a in flat_in:
            if id(a) in self.param_ids:
                self.used[id(a)] = a
        if func in self.conv_ops:
            self._conv(args, kwargs, out)
        elif func in self.matmul_ops and any(self.is_weight(t) for t in flat_in):
            # a layer's matmul (nn.Linear); a matmul with no parameter (the bicubic resize of SRCNN/VDSR
            # inputs, x3 outputs) is interpolation, counted as element-wise work below
            self._matmul(func, args, out)
        elif getattr(func, "is_view", False):
            if any(self.is_weight(t) for t in flat_in) and isinstance(out, self.torch.Tensor):
                self.weight_views[id(out)] = out
        elif func not in _FREE_OPS:
            self._elementwise(func, flat_in, out)

    def _add(self, w, x, out, transposed: bool, true: int, naive: int) -> None:
        self.true += true
        self.naive += naive
        self.convs.append({"weight": list(w.shape), "input": list(x.shape), "output": list(out.shape),
                           "transposed": transposed, "true": true, "naive": naive})  # fmt: skip

    def _conv(self, args, kwargs, out) -> None:
        x, w = args[0], args[1]
        transposed = bool(args[6]) if len(args) > 6 else bool(kwargs.get("transposed", False))
        if transposed:
            # weight (C_in, C_out/groups, kh, kw): per input position C_out/g·kh·kw per input channel
            true = x.numel() * _prod(w.shape[1:])
            naive = true * _prod(args[3])  # x stride (per output position of the x stride map)
        else:
            # weight (C_out, C_in/groups, kh, kw): per output position C_in/g·kh·kw per output channel
            true = naive = out.numel() * _prod(w.shape[1:])
        self._add(w, x, out, transposed, true, naive)

    def _matmul(self, func, args, out) -> None:
        a, b = (args[1], args[2]) if func in self.accumulate_ops else args[:2]
        macs = a.numel() * b.shape[-1]
        w, x = (a, b) if self.is_weight(a) else (b, a)  # x @ W or W @ F
        self._add(w, x, out, False, macs, macs)

    def _elementwise(self, func, flat_in, out) -> None:
        sizes = [t.numel() for t in flat_in]
        sizes += [
            t.numel() for t in self.torch.utils._pytree.tree_leaves(out) if isinstance(t, self.torch.Tensor)
        ]
        # ops on parameters/buffers alone (tiny tables, scalars) are not per-pixel work
        if sizes and max(sizes) > 1 and not all(id(t) in self.param_ids for t in flat_in if t.numel() > 1):
            self.elementwise += max(sizes)
            self.by_op[func.overloadpacket.__name__] += max(sizes)


def count(model, lr: Size, batch: int = 1, device: str = "meta") -> Counts:
    """Count one inference forward of `model` on a (batch, 1, lr.height, lr.width) input.

    The model is deep-copied, its weight normalisation folded (deployment form) and moved to `device`.
    """
    import copy

    import torch
    from torch.utils._python_dispatch import TorchDispatchMode

    from fgdsr.models.init import remove_weight_norm_

    model = copy.deepcopy(model).eval()
    remove_weight_norm_(model)
    model = model.to(device)
    tally = _Tally({id(p): p for p in model.parameters()})
    ran_modules: list[torch.nn.Module] = []
    hooks = [m.register_forward_pre_hook(lambda mod, _a: ran_modules.append(mod)) for m in model.modules()]

    class Counter(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            tally.record(func, args, kwargs or {}, out)
            return out

    make = torch.rand if device != "meta" else torch.empty
    x = make(batch, 1, *lr.hw, device=device)
    try:
        with torch.no_grad(), Counter():
            model(x)
    finally:
        for h in hooks:
            h.remove()
    return _counts(model, tally, ran_modules)


def _counts(model, tally: _Tally, ran_modules) -> Counts:
    """Params of the deployed graph: a parameter an op read, or one of a module that ran (covers ops that
    received a derived view of it); weights = the kernels among them."""
    import torch

    used = dict(tally.used)
    for mod in ran_modules:
        for p in mod.parameters(recurse=False):
            used[id(p)] = p
    kinds = torch.nn.Conv2d | torch.nn.ConvTranspose2d | torch.nn.Linear | torch.nn.Conv1d
    kernel_ids = {id(m.weight) for m in model.modules() if isinstance(m, kinds)}
    params = sum(p.numel() for p in used.values())
    weights = sum(p.numel() for i, p in used.items() if i in kernel_ids)
    return Counts(params, weights, tally.true, tally.naive, tally.elementwise, dict(tally.by_op), tally.convs)


def _free_ops():
    """Ops that move no data per element (metadata, allocation, scalar reads)."""
    import torch

    aten = torch.ops.aten
    names = ["empty", "empty_like", "empty_strided", "detach", "lift_fresh", "_local_scalar_dense", "sym_size",
             "sym_stride", "sym_numel", "zeros", "ones", "scalar_tensor", "arange", "lift_fresh_copy", "_unsafe_view"]  # fmt: skip
    ops = set()
    for n in names:
        packet = getattr(aten, n, None)
        if packet is not None:
            ops.update(getattr(packet, o) for o in packet.overloads())
    return ops


_FREE_OPS: set = set()


def build_reference(model: str, layout: str, loss: str, scale: int, depth: int | None = None):
    """An SRModel for `srcnn|vdsr|lapsrn` with the given loss variant (fresh init: counts need no weights)."""
    from fgdsr.config import TrainConfig
    from fgdsr.models import build_model

    # patch_size only has to be a multiple of the scale for the config to validate; counts do not use it
    cfg = TrainConfig().replace(
        model=model, layout=layout, loss=loss, scale=scale, depth=depth, patch_size=24 * scale
    )
    return build_model(cfg), cfg


def complexity(
    target,
    layout: str = "official",
    loss: str = "l1",
    scale: int | None = None,
    hr_size: Size = DEFAULT_HR,
    convention: str = "true",
    device: str = "meta",
) -> Complexity:
    """The one complexity entry point. `target`: srcnn | vdsr | lapsrn | a checkpoint dir | a TrainConfig.

    For a checkpoint or a config, its own layout, loss and scale count (an explicit `scale` must agree);
    a config is built with fresh weights (counts do not depend on them: an .onnx / engine's sidecar config).
    """
    if convention not in CONVENTIONS:
        raise UserError(f"--convention '{convention}': expected true or naive")
    model, cfg, name = _target_model(target, layout, loss, scale)
    counts = _count_with_fallback(model, lr_size(hr_size, cfg.scale, "--hr-size"), device)
    return Complexity(name, cfg.scale, hr_of(hr_size, cfg.scale), counts, convention)


def _target_model(target, layout: str, loss: str, scale: int | None):
    """-> (model, cfg, name) for `complexity`'s target."""
    from fgdsr.config import TrainConfig

    if isinstance(target, TrainConfig):
        from fgdsr.models import build_model

        if scale is not None and scale != target.scale:
            raise UserError(f"--scale {scale}: the model is a x{target.scale} model; drop --scale")
        return build_model(target), target, f"{target.model}-{target.loss}"
    if target in REFERENCE_MODELS:
        if loss != "l1" and target != "lapsrn":
            raise UserError(f"--loss {loss}: only lapsrn has FGD heads; use --loss l1 with {target}")
        model, cfg = build_reference(target, layout, loss, scale or 4)
        name = target if target != "lapsrn" else f"lapsrn-{layout}" + ("" if loss == "l1" else f"-{loss}")
        return model, cfg, name
    path = Path(target)
    if not path.exists():
        raise UserError(
            f"{target}: not a model name ({', '.join(REFERENCE_MODELS)}) nor a checkpoint directory"
        )
    from fgdsr.checkpoint import load_model

    model, cfg, _meta = load_model(path)
    if scale is not None and scale != cfg.scale:
        raise UserError(f"--scale {scale}: checkpoint {target} is a x{cfg.scale} model; drop --scale")
    return model, cfg, path.name


def _count_with_fallback(model, lr: Size, device: str) -> Counts:
    global _FREE_OPS
    if not _FREE_OPS:
        _FREE_OPS = _free_ops()
    if device == "meta":
        try:
            return count(model, lr, device="meta")
        except (NotImplementedError, RuntimeError):
            pass  # an op without a meta kernel: count on real tensors instead (slower, same numbers)
    return count(model, lr, device="cpu")


# The paper's Table 2 complexity columns (params, Mult-Adds; the same at x2, x3 and x4): LapSRN 862K / 186.2G,
# Ours (FD) 934K / 208.4G. Not its PSNR columns (those are orchestrator.reproduce's).
PAPER_PARAMS_MULT_ADDS = {"lapsrn": (862_000, 186.2e9), "fd": (934_000, 208.4e9)}


def paper_candidates(hr_size: Size = DEFAULT_HR) -> list[dict[str, Any]]:
    """Every plausible way to count LapSRN and LapSRN+FD, to see which comes closest to the paper's Table 2.

    Rows: layout x scale x variant (l1; fd with the 1x1 or the 3x3 head), with
    params, weights and both Mult-Adds conventions. `python -m trt.complexity` prints them (docs/COMPLEXITY.md).
    """
    from fgdsr.config import TrainConfig
    from fgdsr.models import build_model

    # head_levels "all" adds training-only heads: the inference graph (what is counted) equals "last"
    variants = [("l1", 1, "last"), ("fd", 1, "last"), ("fd", 3, "last")]
    rows = []
    for layout in ("official", "port"):
        for scale in (2, 3, 4, 8):
            for loss, kernel, levels in variants:
                cfg = TrainConfig().replace(
                    layout=layout,
                    scale=scale,
                    loss=loss,
                    head_kernel=kernel,
                    head_levels=levels,
                    patch_size=24 * scale,
                )
                prof = _count_with_fallback(build_model(cfg), lr_size(hr_size, scale), "meta")
                rows.append(
                    {"layout": layout, "scale": scale, "variant": loss if loss == "l1" else f"fd-{kernel}x{kernel}-{levels}",
                     "params": prof.params, "weights": prof.weights,
                     "mult_adds_true": prof.mult_adds_true, "mult_adds_naive": prof.mult_adds_naive}
                )  # fmt: skip
    return rows


if __name__ == "__main__":
    print("| layout | scale | variant | params | weights | Mult-Adds true | Mult-Adds naive |")
    print("|---|---|---|---|---|---|---|")
    for r in paper_candidates():
        print(
            f"| {r['layout']} | x{r['scale']} | {r['variant']} | {r['params']:,} | {r['weights']:,} | "
            f"{r['mult_adds_true'] / 1e9:.2f}G | {r['mult_adds_naive'] / 1e9:.2f}G |"
        )
