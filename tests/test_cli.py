"""The CLI starts fast (no torch/Ray/MLflow/ONNX at import) and turns bad arguments into one line, exit 2."""

import subprocess
import sys

from typer.testing import CliRunner

from orchestrator.cli import app

HEAVY = ("torch", "ray", "mlflow", "onnx", "onnxruntime", "tensorrt", "numpy", "accelerate")


def test_help_imports_nothing_heavy():
    code = (
        "import sys\n"
        "from typer.testing import CliRunner\n"
        "from orchestrator.cli import app\n"
        "r = CliRunner().invoke(app, ['--help'])\n"
        "assert r.exit_code == 0, r.output\n"
        f"heavy = [m for m in {HEAVY!r} if m in sys.modules]\n"
        "print(','.join(heavy))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"--help imported {out.stdout.strip()}"


def test_every_command_has_help():
    runner = CliRunner()
    names = [c.name for c in app.registered_commands]
    assert {"evaluate", "train", "upscale", "tune", "export", "benchmark", "pipeline", "reproduce"} <= set(
        names
    )
    for name in names:
        r = runner.invoke(app, [name, "--help"])
        assert r.exit_code == 0, (name, r.output)


def test_unknown_command_is_one_line_exit_2():
    proc = subprocess.run(
        [sys.executable, "-m", "orchestrator", "no-such-command"], capture_output=True, text=True
    )
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and "no-such-command" in lines[0]
    assert "Traceback" not in proc.stderr
