"""The `fgdsr` command line: a thin Typer layer over library functions.

Start-up stays fast: this module and the `cmd_*` modules import no torch, Ray, MLflow or ONNX at the top;
each command imports what it needs when it runs. Every user error (a bad argument, file or field) ends as
one line on stderr and exit code 2, with no traceback.
"""

from __future__ import annotations

import sys

import typer
from typer.core import TyperGroup

try:  # typer >= 0.20 vendors click as typer._click; older releases use click itself
    from typer._click.exceptions import ClickException, UsageError
except ImportError:  # pragma: no cover
    from click.exceptions import ClickException, UsageError

from fgdsr.errors import UserError
from orchestrator import cmd_complexity, cmd_deploy, cmd_eval, cmd_pipeline, cmd_train, cmd_tune, cmd_weights

EXIT_USAGE = 2


def _fail(message: str) -> None:
    """Print `message` as one line on stderr and exit 2."""
    line = " ".join(str(message).split())
    typer.echo(f"error: {line}", err=True)
    sys.exit(EXIT_USAGE)


class FgdsrGroup(TyperGroup):
    """Click group that turns usage errors and `UserError` into one line + exit 2 (also under CliRunner)."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        try:
            rv = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except UsageError as e:
            hint = f" (see '{e.ctx.command_path} --help')" if e.ctx is not None else ""
            _fail(e.format_message() + hint)
        except ClickException as e:
            _fail(e.format_message())
        except UserError as e:
            _fail(str(e))
        except (typer.Abort, KeyboardInterrupt):
            typer.echo("interrupted", err=True)
            sys.exit(130)
        code = rv if isinstance(rv, int) else 0
        if standalone_mode:
            sys.exit(code)
        return rv


app = typer.Typer(
    cls=FgdsrGroup,
    name="fgdsr",
    help="Train, tune and deploy super-resolution networks with the Fine-Grained Dynamic (FGD) loss.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

# The science (fgdsr/): evaluation protocol, training, inference, official weights.
app.command("evaluate")(cmd_eval.evaluate)
app.command("train")(cmd_train.train)
app.command("upscale")(cmd_train.upscale)
app.command("import-weights")(cmd_weights.import_weights)
# Deployment (trt/): complexity, ONNX, TensorRT, latency.
app.command("complexity")(cmd_complexity.complexity)
app.command("export")(cmd_deploy.export)
app.command("build-engine")(cmd_deploy.build_engine)
app.command("benchmark")(cmd_deploy.benchmark)
# Orchestration: Ray Tune sweeps, MLflow, the whole job.
app.command("tune")(cmd_tune.tune)
app.command("ui")(cmd_tune.ui)
app.command("tracking-server")(cmd_tune.tracking_server)
app.command("pipeline")(cmd_pipeline.pipeline)
app.command("reproduce")(cmd_pipeline.reproduce)


if __name__ == "__main__":
    app()
