"""Where the time goes: per-operator profiles of one model on each backend, grouped into trunk / FD head / Class-Module.

- torch (eager): torch.profiler, CPU self time per op (device self time on CUDA); the group of an op is the
  component whose method was running: every method of the trunk, the Class-Module and each FGD head is wrapped
  in a `record_function` range for the profile (generic: whatever the method is called, e.g. `infer`,
  `forward_padded`, `forward_pyramid`), so ops in methods called directly (not through `Module.__call__`) are
  attributed too. Ops SRModel.forward runs between the components (anchor, area lookup, nearest upsampling,
  projection) are FD head: they exist only because of FD.
- torch-compile: the profiler's kernel table, one group 'fused' (inductor fuses across the components).
- ONNX Runtime: `enable_profiling`'s JSON (per-node kernel time). ORT rewrites the graph (NCHWc convs named after
  their output tensor, inserted reorders), so each optimised node is traced back to the exported graph through
  the exported tensor its output becomes (the optimised model is saved for that); exported nodes are grouped by the
  dynamo exporter's module scopes (`pkg.torch.onnx.name_scopes`), and an unscoped node by dataflow: feeding only
  the Class-Module (its input padding) -> Class-Module, feeding the trunk -> trunk, else FD head (the same rule as
  for torch: glue between the components is FD's).
- TensorRT: an `IProfiler` (thin; needs a GPU): per-layer time; a layer's group is the group of the exported
  nodes named in the layer's name (fusions are 'a + b', Myelin regions 'ForeignNode[a...b]'; 'mixed' if they
  disagree).

A model without FGD heads (l1, aux) is all trunk. Each operator's time is its minimum over the profiled forwards
(the least disturbed one): on a shared machine a mean mixes other jobs in.
"""

from __future__ import annotations

import contextlib
import json
import re
import tempfile
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

GROUPS = ("trunk", "FD head", "Class-Module")
# SRModel's children -> group (the first name scope of an exported node, the component of a torch method)
COMPONENT_GROUP = {"trunk": "trunk", "heads": "FD head", "class_module": "Class-Module"}
SHAPE_OPS = {"Shape", "Size"}  # their output is metadata, not data: no dataflow edge through them


@dataclass(frozen=True)
class OpTime:
    """One operator type within one group: total ms per forward and how many calls/nodes per forward."""

    group: str
    op: str
    ms: float
    calls: float


@dataclass(frozen=True)
class OpProfile:
    """A model's per-operator profile on one backend; `forwards` = how many forwards were averaged."""

    backend: str
    label: str
    forwards: int
    ops: tuple[OpTime, ...]

    def by_group(self) -> dict[str, float]:
        """ms per forward of each group (GROUPS first, then any other group that has time)."""
        out = dict.fromkeys(GROUPS, 0.0)
        for o in self.ops:
            out[o.group] = out.get(o.group, 0.0) + o.ms
        return out

    @property
    def total_ms(self) -> float:
        return sum(o.ms for o in self.ops)

    def top(self, n: int = 8, group: str | None = None) -> list[OpTime]:
        rows = [o for o in self.ops if group is None or o.group == group]
        return sorted(rows, key=lambda o: -o.ms)[:n]


class _Times:
    """(group, op) -> ms per forward (rep) and calls: the profile is the per-op minimum over the reps, so a forward
    disturbed by another job on a shared machine does not inflate an operator (each op's least disturbed run)."""

    def __init__(self, reps: int) -> None:
        self.reps = reps
        self.ms: dict[tuple[str, str], list[float]] = defaultdict(lambda: [0.0] * reps)
        self.calls: dict[tuple[str, str], int] = defaultdict(int)

    def add(self, group: str, op: str, rep: int, ms: float) -> None:
        if 0 <= rep < self.reps:
            self.ms[(group, op)][rep] += ms
            self.calls[(group, op)] += 1

    def profile(self, backend: str, label: str) -> OpProfile:
        ops = []
        for (g, op), per_rep in self.ms.items():
            seen = [v for v in per_rep if v > 0]
            if seen:
                ops.append(OpTime(g, op, min(seen), self.calls[(g, op)] / self.reps))
        return OpProfile(backend, label, self.reps, tuple(sorted(ops, key=lambda o: -o.ms)))


# ------------------------------------------------------------------------------------------------------ torch


def _component_methods(model):
    """(module, group) for the trunk, the Class-Module and each head of an SRModel (empty for a plain trunk)."""
    pairs = []
    for child, group in COMPONENT_GROUP.items():
        mod = getattr(model, child, None)
        if mod is None:
            continue
        mods = list(mod.values()) if child == "heads" else [mod]
        pairs += [(m, group) for m in mods]
    return pairs


@contextlib.contextmanager
def _scoped(model):
    """Wrap every method of each component (its own class's, not nn.Module's) in a profiler range 'fgdsr::GROUP'."""
    import torch

    patched = []

    def wrap(fn, group):
        def inner(*a, **k):
            with torch.profiler.record_function(f"fgdsr::{group}"):
                return fn(*a, **k)

        return inner

    for mod, group in _component_methods(model):
        for klass in type(mod).__mro__:
            if klass.__module__.startswith("torch."):
                break
            for name, attr in vars(klass).items():
                if callable(attr) and not name.startswith("__") and name not in mod.__dict__:
                    mod.__dict__[name] = wrap(getattr(mod, name), group)
                    patched.append((mod, name))
    try:
        yield
    finally:
        for mod, name in patched:
            mod.__dict__.pop(name, None)


def _group_of(event, fd_model: bool) -> str | None:
    """The group of a profiler event: its innermost 'fgdsr::' range; None outside the timed forward."""
    e = event.cpu_parent
    while e is not None:
        if e.name.startswith("fgdsr::"):
            name = e.name[len("fgdsr::") :]
            return name if name != "forward" else ("FD head" if fd_model else "trunk")
        e = e.cpu_parent
    return None


def torch_profile(model, shape, device: str = "cpu", reps: int = 3, compiled: bool = False, label: str = ""):
    """Per-op self time of `reps` forwards of `model` (an SRModel) at the fixed `shape` (N, 1, h, w)."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    model = model.to(device).eval()
    cuda = device.startswith("cuda")
    x = torch.rand(tuple(shape), device=device, generator=torch.Generator(device).manual_seed(0))
    fd_model = bool(_component_methods(model)) and (len(getattr(model, "heads", {})) > 0)
    fn = torch.compile(model, dynamic=False) if compiled else model
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    scope = contextlib.nullcontext() if compiled or not fd_model else _scoped(model)
    with torch.inference_mode(), scope:
        for _ in range(2):  # compile / warm up outside the profile
            fn(x)
        with profile(activities=acts) as prof:
            for _ in range(reps):
                with torch.profiler.record_function("fgdsr::forward"):
                    fn(x)
            if cuda:
                torch.cuda.synchronize()
    events = prof.events()
    forwards = sorted((e for e in events if e.name == "fgdsr::forward"), key=lambda e: e.time_range.start)
    rep_of = {e.id: i for i, e in enumerate(forwards)}
    times = _Times(reps)
    for e in events:
        if e.name.startswith("fgdsr::"):
            continue
        group, top = _group_of(e, fd_model), _top_range(e)
        if group is None or top is None:
            continue
        us = e.self_device_time_total if cuda else e.self_cpu_time_total
        times.add("fused" if compiled else group, e.name, rep_of.get(top.id, -1), us / 1e3)
    return times.profile("torch-compile" if compiled else "torch", label)


def _top_range(event):
    """The 'fgdsr::forward' range an event ran in (None outside the timed forwards)."""
    e = event.cpu_parent
    while e is not None and e.name != "fgdsr::forward":
        e = e.cpu_parent
    return e


# ------------------------------------------------------------------------------------------------------- ONNX


def _scope_group(node) -> str | None:
    """The group named by the exporter's module scope of an ONNX node, None when it has none."""
    for prop in node.metadata_props:
        if prop.key == "pkg.torch.onnx.name_scopes":
            for scope in json.loads(prop.value.replace("'", '"')):
                top = scope.split(".", 1)[0]
                if top in COMPONENT_GROUP:
                    return COMPONENT_GROUP[top]
    return None


def onnx_node_groups(graph) -> dict[str, str]:
    """Exported ONNX node name -> group (module scope, else the dataflow rule in the module docstring)."""
    nodes = list(graph.node)
    groups = {n.name: _scope_group(n) for n in nodes}
    if not any(g in ("FD head", "Class-Module") for g in groups.values()):
        return dict.fromkeys(groups, "trunk")
    producer = {t: n for n in nodes for t in n.output}
    consumers = defaultdict(list)
    for n in nodes:
        for t in n.input:
            consumers[t].append(n)

    def reach(seeds, step) -> set[str]:
        seen, todo = set(), list(seeds)
        while todo:
            n = todo.pop()
            for m in step(n):
                if m.name not in seen:
                    seen.add(m.name)
                    todo.append(m)
        return seen

    def down(n):
        return [] if n.op_type in SHAPE_OPS else [m for t in n.output for m in consumers[t]]

    def up(n):
        return [producer[t] for t in n.input if t in producer and producer[t].op_type not in SHAPE_OPS]

    after_trunk = reach([n for n in nodes if groups[n.name] == "trunk"], down)
    feeds_cm = reach([n for n in nodes if groups[n.name] == "Class-Module"], up)
    feeds_trunk = reach([n for n in nodes if groups[n.name] == "trunk"], up)
    for n in nodes:
        if groups[n.name] is None:
            if n.name in feeds_cm and n.name not in after_trunk and n.name not in feeds_trunk:
                groups[n.name] = "Class-Module"
            elif n.name in feeds_trunk and n.name not in after_trunk:
                groups[n.name] = "trunk"
            else:
                groups[n.name] = "FD head"
    return groups


def _optimised_groups(
    optimised, exported: dict[str, str], exported_producer: dict[str, str]
) -> dict[str, str]:
    """ORT's optimised node name -> group: its own name if exported, else the exported tensor it ends up writing.

    ORT's NCHWc convs write a blocked tensor that a ReorderOutput turns back into the exported tensor, so the
    group follows the data downstream to the first exported tensor (reverse topological pass); a node that
    reaches none (rare) takes its inputs' group.
    """
    tensor_group = {t: exported[n] for t, n in exported_producer.items() if n in exported}
    consumers = defaultdict(list)
    for n in optimised.node:
        for t in n.input:
            consumers[t].append(n.name)
    out: dict[str, str] = {}
    for n in reversed(list(optimised.node)):
        g = exported.get(n.name) or next((tensor_group[t] for t in n.output if t in tensor_group), None)
        g = g or next((out[c] for t in n.output for c in consumers[t] if out.get(c)), None)
        out[n.name] = g or ""
    for n in optimised.node:
        if not out[n.name]:
            out[n.name] = next((tensor_group[t] for t in n.input if t in tensor_group), "unattributed")
    return out


def ort_profile(
    onnx_path, shape, threads: int | None = None, reps: int = 3, label: str = "", device: str = "cpu"
):
    """Per-node kernel time of `reps` runs of the .onnx at `shape` in ONNX Runtime's own profiler, grouped."""
    import numpy as np
    import onnx
    import onnxruntime as ort

    from trt.backends import ort_providers
    from trt.export import INPUT_NAME, OUTPUT_NAME

    exported_model = onnx.load(str(onnx_path), load_external_data=False)
    exported = onnx_node_groups(exported_model.graph)
    producer = {t: n.name for n in exported_model.graph.node for t in n.output}
    x = np.random.default_rng(0).random(tuple(shape), dtype=np.float32)
    with tempfile.TemporaryDirectory(prefix="fgdsr-ortprof-") as tmp:
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        if threads:
            opts.intra_op_num_threads, opts.inter_op_num_threads = threads, 1
        opts.optimized_model_filepath = str(Path(tmp) / "optimised.onnx")
        opts.enable_profiling = True
        opts.profile_file_prefix = str(Path(tmp) / "ort")
        sess = ort.InferenceSession(str(onnx_path), sess_options=opts, providers=ort_providers(device))
        for _ in range(2):  # warm-up runs are in the JSON too: only the last `reps` runs are counted
            sess.run([OUTPUT_NAME], {INPUT_NAME: x})
        for _ in range(reps):
            sess.run([OUTPUT_NAME], {INPUT_NAME: x})
        events = json.loads(Path(sess.end_profiling()).read_text())
        optimised = onnx.load(opts.optimized_model_filepath, load_external_data=False).graph
    groups = _optimised_groups(optimised, exported, producer)
    return _ort_times(events, groups, reps).profile("onnxruntime", label)


def _ort_times(events: list[dict], groups: dict[str, str], reps: int) -> _Times:
    """Kernel time per (group, op type) in each of the last `reps` model runs."""
    runs = sorted((e for e in events if e.get("cat") == "Session" and e.get("name") == "model_run"),
                  key=lambda e: e["ts"])[-reps:]  # fmt: skip
    times = _Times(reps)
    for e in events:
        if e.get("cat") != "Node" or not e["name"].endswith("_kernel_time"):
            continue
        rep = next((i for i, r in enumerate(runs) if r["ts"] <= e["ts"] <= r["ts"] + r["dur"]), -1)
        node = e.get("args", {}).get("node_name") or e["name"][: -len("_kernel_time")]
        times.add(
            groups.get(node, "unattributed"), e.get("args", {}).get("op_name", "?"), rep, e["dur"] / 1e3
        )
    return times


# --------------------------------------------------------------------------------------------------- TensorRT


def layer_group(layer: str, exported: dict[str, str]) -> str:
    """The group of a TensorRT layer from the exported node names its name contains ('mixed' if several)."""
    found = {exported[t] for t in re.findall(r"\w+", layer) if t in exported}
    if not found:
        return "unattributed"
    return found.pop() if len(found) == 1 else "mixed"


def tensorrt_profile(engine_path, onnx_path, shape, reps: int = 3, label: str = ""):  # pragma: no cover - GPU
    """Per-layer GPU time of `reps` executions of the engine (TensorRT's IProfiler), grouped via the ONNX graph."""
    import onnx

    from trt.engine import import_tensorrt
    from trt.runtime import TrtRunner

    trt = import_tensorrt()

    class LayerTimes(trt.IProfiler):
        def __init__(self) -> None:
            trt.IProfiler.__init__(self)
            self.ms: dict[str, list[float]] = defaultdict(list)  # one entry per execution

        def report_layer_time(self, layer_name: str, ms: float) -> None:
            self.ms[layer_name].append(ms)

    exported = (
        onnx_node_groups(onnx.load(str(onnx_path), load_external_data=False).graph) if onnx_path else {}
    )
    runner = TrtRunner(engine_path, tuple(shape))
    try:
        prof = LayerTimes()
        runner.context.profiler = prof
        for _ in range(reps):
            runner.time_compute()
        runner.stream.synchronize()
    finally:
        runner.close()
    times = _Times(reps)
    for layer, per_run in prof.ms.items():
        for rep, ms in enumerate(per_run):
            times.add(layer_group(layer, exported), layer[:60], rep, ms)
    return times.profile("tensorrt", label)
