"""Per-operator profiles grouped into trunk / FD head / Class-Module, on real l1 and fd models (torch and ORT)."""

from __future__ import annotations

from collections import Counter

import pytest
import torch

from fgdsr.config import TrainConfig
from fgdsr.models import build_model
from trt.opprofile import GROUPS, layer_group, onnx_node_groups, ort_profile, torch_profile

SHAPE = (1, 1, 24, 32)


@pytest.fixture(scope="module")
def models():
    out = {}
    for loss in ("l1", "fd"):
        torch.manual_seed(0)
        out[loss] = build_model(TrainConfig(loss=loss, depth=2, channels=8)).eval()
    return out


@pytest.fixture(scope="module")
def onnx_files(models, tmp_path_factory):
    from trt.export import export_onnx

    root = tmp_path_factory.mktemp("opprof")
    out = {}
    for loss, model in models.items():
        out[loss] = root / f"{loss}.onnx"
        export_onnx(model, out[loss], TrainConfig(loss=loss, depth=2, channels=8))
    return out


def _calls(profile, group: str) -> Counter:
    return Counter({o.op: round(o.calls) for o in profile.ops if o.group == group})


def test_torch_profile_groups(models):
    l1 = torch_profile(models["l1"], SHAPE, reps=2)
    fd = torch_profile(models["fd"], SHAPE, reps=2)
    assert set(l1.by_group()) == set(GROUPS) and l1.by_group()["trunk"] == pytest.approx(l1.total_ms)
    groups = fd.by_group()
    assert all(groups[g] > 0 for g in GROUPS), groups
    # the fd model's trunk runs exactly the l1 model's trunk ops, so FD's extra ops are all outside it
    assert _calls(fd, "trunk") == _calls(l1, "trunk")
    cm_ops = {o.op for o in fd.ops if o.group == "Class-Module"}
    assert any("conv" in op for op in cm_ops), cm_ops
    # the wrappers are gone afterwards: the model's own methods again
    assert not any(name in models["fd"].class_module.__dict__ for name in ("forward", "forward_padded"))


def test_onnx_nodes_grouped_by_scope_and_dataflow(onnx_files):
    import onnx

    graphs = {loss: onnx.load(str(p)).graph for loss, p in onnx_files.items()}
    l1, fd = (onnx_node_groups(graphs[k]) for k in ("l1", "fd"))
    assert set(l1.values()) == {"trunk"}
    by_op = {n.name: n.op_type for n in graphs["fd"].node}
    trunk_ops = Counter(by_op[name] for name, g in fd.items() if g == "trunk")
    assert trunk_ops == Counter(
        n.op_type for n in graphs["l1"].node
    )  # the fd trunk is the l1 graph, node for node
    pads = [name for name, op in by_op.items() if op == "Pad"]
    assert pads and all(
        fd[name] == "Class-Module" for name in pads
    )  # unscoped, but only feeds the Class-Module
    assert {fd[name] for name, op in by_op.items() if op == "Tanh"} == {"FD head"}  # the projection


def test_ort_profile_groups(onnx_files):
    l1 = ort_profile(onnx_files["l1"], SHAPE, threads=1, reps=2)
    fd = ort_profile(onnx_files["fd"], SHAPE, threads=1, reps=2)
    assert l1.by_group()["trunk"] == pytest.approx(l1.total_ms) and l1.total_ms > 0
    groups = fd.by_group()
    assert all(groups[g] > 0 for g in GROUPS) and groups.get("unattributed", 0) == 0, groups
    # ORT's own nodes (NCHWc convs, reorders) are traced back: the head's 1x1 conv is FD head
    assert any(o.op == "Conv" for o in fd.ops if o.group == "FD head")
    assert any(o.op == "Conv" for o in fd.ops if o.group == "Class-Module")


def test_tensorrt_layer_names_map_to_groups():
    exported = {"node_Conv_1": "trunk", "node_Conv_9": "FD head", "node_abs_1": "FD head"}
    assert layer_group("node_Conv_9 + node_abs_1", exported) == "FD head"
    assert layer_group("Reformatting CopyNode for Input Tensor 0 to node_Conv_1", exported) == "trunk"
    assert layer_group("{ForeignNode[node_Conv_1...node_abs_1]}", exported) == "mixed"
    assert layer_group("myelin_copy", exported) == "unattributed"
