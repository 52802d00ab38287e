"""The `t2` command: one Typer app, one module per command group."""

from __future__ import annotations

import os
import sys
from typing import Any

import typer
from typer.core import TyperGroup

from t2cli.cli import experts, tasks
from t2cli.cli.chat import chat_command
from t2cli.cli.decompose import decompose_command
from t2cli.cli.demo import demo_command
from t2cli.cli.evaluate import compare_command, eval_command, score_command
from t2cli.cli.export import export_command
from t2cli.cli.info import info_command
from t2cli.cli.mix import mix_command
from t2cli.cli.serve import serve_command
from t2cli.cli.train import train_command
from t2cli.cli.validate import checked

try:  # recent Typer carries its own copy of click
    from typer._click.exceptions import ClickException
except ImportError:  # pragma: no cover - older Typer on the click package
    from click.exceptions import ClickException


class OneLineErrors(TyperGroup):
    """Usage errors (a bad or missing option value) as one line on stderr and exit 2, instead of
    Typer's usage text and boxed panel: `error: --limit must be ≥ 1 (got 0)`."""

    def main(self, *args: Any, standalone_mode: bool = True, **kwargs: Any) -> Any:
        if not standalone_mode:
            return super().main(*args, standalone_mode=False, **kwargs)
        try:
            code = super().main(*args, standalone_mode=False, **kwargs)
        except ClickException as error:
            if type(error).__name__ != "NoArgsIsHelpError":  # `t2` alone: the help was printed
                context = getattr(error, "ctx", None)
                hint = f" (see `{context.command_path} --help`)" if context is not None else ""
                typer.echo(f"error: {_message(error)}{hint}", err=True)
            sys.exit(error.exit_code)
        except typer.Abort:
            typer.echo("aborted", err=True)
            sys.exit(1)
        except BrokenPipeError:  # `t2 … | head`: the reader left; nothing to report
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # (the Python docs' recipe)
            sys.exit(1)
        sys.exit(code if isinstance(code, int) else 0)


def _message(error: ClickException) -> str:
    """`--limit must be ≥ 1 (got 0)` for the checks of validate.py; click's own text otherwise."""
    param = getattr(error, "param", None)
    if not isinstance(error, typer.BadParameter) or param is None:
        return error.format_message()
    name = max(param.opts, key=len) if param.param_type_name == "option" else (param.name or "").upper()
    return f"{name} {error.message}" if error.message.startswith("must ") else f"{name}: {error.message}"


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import PackageNotFoundError, version

        try:
            number = version("t2cli")
        except PackageNotFoundError:
            number = "unknown (not installed)"
        typer.echo(f"t2 {number}")
        raise typer.Exit()


app = typer.Typer(
    name="t2",
    help="Transformer²: self-adaptive LLMs from the command line (SVF expert vectors, two-pass inference).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    cls=OneLineErrors,
)


@app.callback()
def _options(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print t2's version and exit."
    ),
) -> None:
    """Transformer²: self-adaptive LLMs from the command line (SVF expert vectors, two-pass inference)."""


app.command("decompose")(checked("decompose", decompose_command))
app.add_typer(experts.app, name="experts")
app.add_typer(tasks.app, name="tasks")
app.command("mix")(checked("mix", mix_command))
app.command("info")(checked("info", info_command))
app.command("demo")(checked("demo", demo_command))
app.command("eval")(checked("eval", eval_command))
app.command("score")(checked("score", score_command))
app.command("compare")(checked("compare", compare_command))
app.command("train")(checked("train", train_command))
app.command("chat")(checked("chat", chat_command))
app.command("export")(checked("export", export_command))
app.command("serve")(checked("serve", serve_command))


def main() -> None:
    app(prog_name="t2")


if __name__ == "__main__":  # `python -m t2cli.cli.app`, e.g. under torchrun
    main()
