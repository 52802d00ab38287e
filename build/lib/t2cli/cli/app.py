"""The `t2` command: one Typer app, one module per command group."""

from __future__ import annotations

import typer

from t2cli.cli import experts
from t2cli.cli.chat import chat_command
from t2cli.cli.decompose import decompose_command
from t2cli.cli.demo import demo_command
from t2cli.cli.evaluate import compare_command, eval_command, score_command
from t2cli.cli.info import info_command
from t2cli.cli.mix import mix_command
from t2cli.cli.train import train_command

app = typer.Typer(
    name="t2",
    help="Transformer²: self-adaptive LLMs from the command line (SVF expert vectors, two-pass inference).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.command("decompose")(decompose_command)
app.add_typer(experts.app, name="experts")
app.command("mix")(mix_command)
app.command("info")(info_command)
app.command("demo")(demo_command)
app.command("eval")(eval_command)
app.command("score")(score_command)
app.command("compare")(compare_command)
app.command("train")(train_command)
app.command("chat")(chat_command)


def main() -> None:
    app()


if __name__ == "__main__":  # `python -m t2cli.cli.app`, e.g. under torchrun
    main()
