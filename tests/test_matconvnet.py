"""MatConvNet import: the converted LapSRN equals an independent NumPy evaluation of the DagNN layers.

`dag_forward` below re-implements vl_nnconv / vl_nnconvt / ReLU / Sum from the MatConvNet manual, in NumPy,
directly on the file's arrays (MATLAB (h, w, c) layout, no torch): it shares no code with LapSRN or the
converter. Synthetic DagNN files (written with scipy.io.savemat in the layout of init_LapSRN.m) make the
check run everywhere; the authors' files are checked too when ../shared/weights is present.
"""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
import scipy.io
import torch
from typer.testing import CliRunner

from fgdsr.errors import UserError
from fgdsr.matconvnet import import_matconvnet, import_weights, read_dagnn
from fgdsr.models.lapsrn import LapSRN
from orchestrator.cli import app

SHA256 = {  # ../shared/weights/lapsrn-official/SOURCE.md
    2: "e368225004e2d5e49d772c5c4eb16c3f28f7fe3b68fec7a9bb91f55e25602baa",
    4: "1d845a3efdca8848968df9e216931419e3b1122373a233d612b4f599985e6367",
    8: "a887221465fe22eb" + "da8ad5963cf812db807e7a9aa8e9d9453aee60e237af5e10",
}


# ------------------------------------------------------------------------ MatConvNet layers, in NumPy
def vl_nnconv(x: np.ndarray, f: np.ndarray, b, pad, stride) -> np.ndarray:
    """y(i,j,k) = b(k) + sum_{u,v,d} f(u,v,d,k) x(i*s+u-pad_top, j*s+v-pad_left, d); x (H,W,D), f (h,w,D,K)."""
    f = f.reshape(f.shape[0], f.shape[1], x.shape[2], -1)
    t, bo, le, ri = pad
    xp = np.pad(x, ((t, bo), (le, ri), (0, 0)))
    kh, kw = f.shape[:2]
    oh = (xp.shape[0] - kh) // stride[0] + 1
    ow = (xp.shape[1] - kw) // stride[1] + 1
    y = np.zeros((oh, ow, f.shape[3]))
    for u in range(kh):
        for v in range(kw):
            patch = xp[u : u + stride[0] * oh : stride[0], v : v + stride[1] * ow : stride[1], :]
            y += patch @ f[u, v]
    return y + (0 if b is None else np.asarray(b).reshape(-1))


def vl_nnconvt(x: np.ndarray, f: np.ndarray, b, upsample, crop) -> np.ndarray:
    """Adjoint of vl_nnconv: scatter x(i,j,:) through f(u,v,k,:) to (i*up+u, j*up+v, k), then crop [t b l r].

    f is (h, w, K, D): filter k is f(:,:,k,:) (vl_nnconvt's convention), D = the input depth.
    """
    f = f.reshape(f.shape[0], f.shape[1], -1, x.shape[2])
    kh, kw = f.shape[:2]
    h, w = x.shape[:2]
    full = np.zeros((upsample[0] * (h - 1) + kh, upsample[1] * (w - 1) + kw, f.shape[2]))
    for u in range(kh):
        for v in range(kw):
            full[u : u + upsample[0] * h : upsample[0], v : v + upsample[1] * w : upsample[1], :] += (
                x @ f[u, v].T
            )
    t, bo, le, ri = crop
    y = full[t : full.shape[0] - bo, le : full.shape[1] - ri, :]
    return y + (0 if b is None else np.asarray(b).reshape(-1))


def _vec(block, key, n):
    v = np.atleast_1d(np.asarray(getattr(block, key))).astype(int)
    return tuple(np.repeat(v, n) if v.size == 1 else v)


def dag_forward(path, lr: np.ndarray, output: str = "level1_output") -> np.ndarray:
    """Evaluate the DagNN in `path` on an (H, W) LR image in the file's own layer order; -> (H', W')."""
    mat = scipy.io.loadmat(str(path), squeeze_me=True, struct_as_record=False)
    net = mat["net"]
    params = {p.name: np.asarray(p.value, dtype=np.float64) for p in np.atleast_1d(net.params)}
    env = {"LR": lr[:, :, None].astype(np.float64)}
    pending = list(np.atleast_1d(net.layers))
    while output not in env:
        for lay in pending:
            ins = [lay.inputs] if isinstance(lay.inputs, str) else list(lay.inputs)
            if not all(i in env for i in ins) or lay.type.endswith("loss"):
                continue
            ps = [lay.params] if isinstance(lay.params, str) else list(np.atleast_1d(lay.params))
            blk = lay.block
            x = env[ins[0]]
            if lay.type == "dagnn.Conv":
                y = vl_nnconv(x, params[ps[0]], params[ps[1]] if blk.hasBias else None, _vec(blk, "pad", 4),
                              _vec(blk, "stride", 2))  # fmt: skip
            elif lay.type == "dagnn.ConvTranspose":
                b = params[ps[1]] if blk.hasBias else None
                y = vl_nnconvt(x, params[ps[0]], b, _vec(blk, "upsample", 2), _vec(blk, "crop", 4))
            elif lay.type == "dagnn.ReLU":
                y = np.where(x > 0, x, x * float(blk.leak))
            elif lay.type == "dagnn.Sum":
                y = sum(env[i] for i in ins)
            else:
                raise AssertionError(lay.type)
            env[lay.outputs] = y
            pending.remove(lay)
            break
        else:
            raise AssertionError("DAG stuck")
    return env[output][:, :, 0]


# --------------------------------------------------------------------- synthetic DagNN files (savemat)
def _structs(records: list[dict]) -> np.ndarray:
    fields = list(records[0])
    arr = np.empty((1, len(records)), dtype=[(k, object) for k in fields])
    for i, rec in enumerate(records):
        for k in fields:
            arr[0, i][k] = rec[k]
    return arr


def _cell(items: list[str]) -> np.ndarray:
    out = np.empty((1, len(items)), dtype=object)
    for i, s in enumerate(items):
        out[0, i] = s
    return out


def write_lapsrn_mat(path, levels=2, depth=2, channels=4, seed=0, rename=None, mutate=None) -> None:
    """A LapSRN DagNN laid out as init_LapSRN.m builds it, with random weights (biases too)."""
    rng = np.random.default_rng(seed)
    params, layers = [], []

    def add(name, type_, inputs, outputs, pnames, block):
        layers.append({"name": name, "type": type_, "inputs": _cell(inputs), "outputs": _cell(outputs),
                       "params": _cell(pnames), "block": block})  # fmt: skip

    def param(name, shape, scale=0.3):
        params.append({"name": name, "value": (rng.standard_normal(shape) * scale).astype(np.float32),
                       "learningRate": 1.0, "weightDecay": 1.0})  # fmt: skip

    def conv(name, src, cin, cout):
        param(f"{name}_f", (3, 3, cin, cout))
        param(f"{name}_b", (cout,), 0.1)
        block = {"size": np.array([3, 3, cin, cout], np.uint8), "hasBias": 1, "pad": np.ones(4, np.uint8),
                 "stride": np.ones(2, np.uint8), "dilate": np.ones(2, np.uint8), "opts": "cuDNN"}  # fmt: skip
        return block

    def relu(name, src):
        add(name, "dagnn.ReLU", [src], [name], [], {"useShortCircuit": 1, "leak": 0.2})
        return name

    block = conv("input_conv", "LR", 1, channels)
    add("input_conv", "dagnn.Conv", ["LR"], ["input_conv"], ["input_conv_f", "input_conv_b"], block)
    var = relu("input_relu", "input_conv")
    for s in range(levels, 0, -1):
        for d in range(1, depth + 1):
            n = f"level{s}_conv{d}"
            add(n, "dagnn.Conv", [var], [n], [f"{n}_f", f"{n}_b"], conv(n, var, channels, channels))
            var = relu(f"level{s}_relu{d}", n)
        n = f"level{s}_upconv"
        param(f"{n}_f", (3, 3, channels, channels))
        param(f"{n}_b", (channels,), 0.1)
        add(n, "dagnn.ConvTranspose", [var], [n], [f"{n}_f", f"{n}_b"],
            {"size": np.array([3, 3, channels, channels], np.uint8), "hasBias": 1, "upsample": np.array([2, 2]),
             "crop": np.array([0, 1, 0, 1], np.uint8), "numGroups": 1, "opts": "cuDNN"})  # fmt: skip
        var = relu(f"level{s}_uprelu", n)
        n = f"level{s}_residual"
        param(f"{n}_conv_f", (3, 3, channels, 1))
        param(f"{n}_conv_b", (1,), 0.1)
        add(n, "dagnn.Conv", [var], [n], [f"{n}_conv_f", f"{n}_conv_b"],
            {"size": np.array([3, 3, channels, 1], np.uint8), "hasBias": 1, "pad": np.ones(4, np.uint8),
             "stride": np.ones(2, np.uint8), "opts": "cuDNN"})  # fmt: skip
    img = "LR"
    for s in range(levels, 0, -1):
        n = f"level{s}_img_up"
        param(f"{n}_f", (4, 4))
        add(n, "dagnn.ConvTranspose", [img], [n], [f"{n}_f"],
            {"size": np.array([4, 4, 1, 1], np.uint8), "hasBias": 0, "upsample": np.array([2, 2]),
             "crop": np.ones(4, np.uint8), "numGroups": 1, "opts": "cuDNN"})  # fmt: skip
        add(f"level{s}_output", "dagnn.Sum", [n, f"level{s}_residual"], [f"level{s}_output"], [], {})
        img = f"level{s}_output"
    for lay in layers:
        if rename:
            lay["name"] = rename(lay["name"])
        if mutate:
            mutate(lay)
    net = {
        "vars": _structs([{"name": "LR"}]),
        "params": _structs(params),
        "layers": _structs(layers),
        "meta": {},
    }
    scipy.io.savemat(str(path), {"net": net})


def converted_forward(path, lr: np.ndarray) -> np.ndarray:
    state, cfg, _ = import_matconvnet(path)
    model = LapSRN(cfg.scale, cfg.depth, cfg.channels, layout="official").double()
    model.load_state_dict({k: v.double() for k, v in state.items()}, strict=True)
    with torch.no_grad():
        return model(torch.from_numpy(lr)[None, None]).numpy()[0, 0]


# ------------------------------------------------------------------------------------------------ tests
@pytest.mark.parametrize(("h", "w"), [(7, 9), (8, 6), (5, 5)])
def test_synthetic_dagnn_matches_numpy_reference_odd_and_even(tmp_path, h, w):
    path = tmp_path / "LapSRN_x4.mat"
    write_lapsrn_mat(path, levels=2, depth=2, channels=4, seed=h * w)
    lr = np.random.default_rng(1).random((h, w))
    ref = dag_forward(path, lr)
    assert ref.shape == (4 * h, 4 * w)
    out = converted_forward(path, lr)
    np.testing.assert_allclose(out, ref, rtol=0, atol=1e-10)
    # the intermediate level too (x2 image)
    state, cfg, _ = import_matconvnet(path)
    model = LapSRN(4, 2, 4).double()
    model.load_state_dict({k: v.double() for k, v in state.items()})
    images, _ = model.forward_pyramid(torch.from_numpy(lr)[None, None])
    np.testing.assert_allclose(
        images[0][0, 0].detach().numpy(), dag_forward(path, lr, "level2_output"), atol=1e-10
    )


def test_crop_convention_is_not_symmetric(tmp_path):
    """A wrong crop (torch's symmetric padding=1, output_padding=1) shifts the map: the reference catches it."""
    x = np.random.default_rng(0).random((5, 6, 2))
    f = np.random.default_rng(1).standard_normal((3, 3, 3, 2))
    ref = vl_nnconvt(x, f, None, (2, 2), (0, 1, 0, 1))
    wt = torch.from_numpy(f.transpose(3, 2, 0, 1).copy())
    xt = torch.from_numpy(x.transpose(2, 0, 1).copy())[None]
    right = torch.nn.functional.conv_transpose2d(xt, wt, stride=2)[0, :, :10, :12].numpy().transpose(1, 2, 0)
    wrong = torch.nn.functional.conv_transpose2d(xt, wt, stride=2, padding=1, output_padding=1)
    np.testing.assert_allclose(right, ref, atol=1e-12)
    assert wrong.shape[-2:] == (10, 12) and np.abs(wrong[0].numpy().transpose(1, 2, 0) - ref).max() > 1e-3


def test_import_writes_a_checkpoint_with_provenance(tmp_path):
    from fgdsr.checkpoint import load_model

    path = tmp_path / "LapSRN_x2.mat"
    write_lapsrn_mat(path, levels=1, depth=3, channels=4)
    ckpt = import_weights(path, tmp_path / "ckpt")
    model, cfg, meta = load_model(ckpt)
    assert (cfg.scale, cfg.depth, cfg.channels, cfg.layout, cfg.loss) == (2, 3, 4, "official", "l1")
    assert meta["provenance"]["source_sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    lr = np.random.default_rng(2).random((6, 7))
    with torch.no_grad():
        out = model(torch.from_numpy(lr).float()[None, None])[0, 0].numpy()
    np.testing.assert_allclose(out, dag_forward(path, lr), atol=1e-4)


def test_bad_files_rejected_with_one_line(tmp_path):
    text = tmp_path / "notes.mat"
    text.write_text("this is not a mat file\n")
    other = tmp_path / "other.mat"
    scipy.io.savemat(str(other), {"weights": np.zeros((3, 3))})
    good = tmp_path / "LapSRN_x4.mat"
    write_lapsrn_mat(good)
    truncated = tmp_path / "truncated.mat"
    truncated.write_bytes(good.read_bytes()[: len(good.read_bytes()) // 2])
    ms = tmp_path / "MSLapSRN_D5R8.mat"
    write_lapsrn_mat(ms, rename=lambda n: "x4SR_" + n)
    cases = [
        (text, "not a readable MATLAB .mat file"),
        (other, "not a MatConvNet DagNN"),
        (truncated, "truncated"),
        (ms, "MS-LapSRN"),
        (tmp_path / "missing.mat", "file not found"),
    ]
    for path, needle in cases:
        with pytest.raises(UserError, match=needle) as err:
            import_matconvnet(path)
        assert "\n" not in str(err.value)
    runner = CliRunner()
    res = runner.invoke(app, ["import-weights", str(truncated), "--out", str(tmp_path / "x")])
    assert res.exit_code == 2 and "Traceback" not in res.output and "truncated" in res.output
    assert not (tmp_path / "x").exists()


def test_layer_mismatches_rejected(tmp_path):
    """A DagNN whose blocks differ from the official layout (here: the image branch with another crop)."""
    path = tmp_path / "odd.mat"

    def crop0(layer):
        if layer["name"] == "level1_img_up":
            layer["block"]["crop"] = np.zeros(4, np.uint8)

    write_lapsrn_mat(path, mutate=crop0)
    with pytest.raises(UserError, match="level1_img_up' crops"):
        import_matconvnet(path)

    def leak(layer):
        if layer["name"] == "level2_relu1":
            layer["block"]["leak"] = 0.0

    write_lapsrn_mat(path, mutate=leak)
    with pytest.raises(UserError, match="leak 0.0"):
        import_matconvnet(path)


@pytest.mark.parametrize("scale", [2, 4, 8])
def test_import_official_files(official_weights, tmp_path, scale):
    src = official_weights / f"LapSRN_x{scale}.mat"
    runner = CliRunner()
    res = runner.invoke(app, ["import-weights", str(src), "--out", str(tmp_path / "ck")])
    assert res.exit_code == 0, res.output
    meta = json.loads((tmp_path / "ck" / "meta.json").read_text())
    assert meta["provenance"]["source_sha256"] == SHA256[scale]
    cfg = json.loads((tmp_path / "ck" / "config.json").read_text())
    assert (cfg["scale"], cfg["depth"], cfg["layout"]) == (scale, 5 if scale == 8 else 10, "official")
    net = read_dagnn(src)
    assert net.params["input_conv_f"].shape == (3, 3, 64)  # squeezed by loadmat, restored by the reader


@pytest.mark.parametrize(("scale", "hw"), [(2, (9, 8)), (4, (7, 6))])
def test_official_files_match_numpy_reference(official_weights, scale, hw):
    src = official_weights / f"LapSRN_x{scale}.mat"
    lr = np.random.default_rng(scale).random(hw)
    np.testing.assert_allclose(converted_forward(src, lr), dag_forward(src, lr), atol=1e-9)


@pytest.mark.slow
def test_official_x4_reproduces_set5(official_weights, data_root, tmp_path):
    """`fgdsr import-weights` + `fgdsr evaluate --checkpoint`: Set5 x4 within 0.05 dB of 31.51 (docs/RESULTS.md)."""
    runner = CliRunner()
    ckpt = tmp_path / "lapsrn_x4"
    res = runner.invoke(app, ["import-weights", str(official_weights / "LapSRN_x4.mat"), "--out", str(ckpt)])
    assert res.exit_code == 0, res.output
    args = [
        "evaluate",
        "--checkpoint",
        str(ckpt),
        "--dataset",
        "Set5",
        "--data-root",
        str(data_root),
        "--json",
    ]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    (row,) = json.loads(res.stdout)["results"]
    assert (row["dataset"], row["scale"]) == ("Set5", 4)
    assert abs(row["psnr"] - 31.51) < 0.05, row["psnr"]
    assert row["ssim"] > 0.88
