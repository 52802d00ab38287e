"""The table of docs/RELIABILITY.md "Command-line input": each bad input run through the real `t2`
command, with its exit code and what it printed (stdout and stderr together).

    OMP_NUM_THREADS=1 python docs/cli_input_table.py > docs/results/cli_input_table.md

Needs the embedded default model for the data-file row (loading it takes ~2 s); everything else is
refused before a model is loaded.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path


def bad_inputs(scratch: Path) -> list[list[str]]:
    from transformers import BertConfig, BertModel

    bert = scratch / "bert"
    config = BertConfig(vocab_size=64, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=24)
    BertModel(config).save_pretrained(bert)
    data = scratch / "data"
    (data / "gsm8k").mkdir(parents=True)
    rows = [{"problem": "What is 1 + 1?", "solution": "2"}] * 3
    (data / "gsm8k" / "test.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    return [
        ["eval", "--task", "gsm8k", "--limit", "0"],
        ["eval", "--task", "gsm8k", "--limit", "-3"],
        ["eval", "--task", "gsm8k", "--max-new-tokens", "0"],
        ["eval", "--task", "gsm8k", "--batch-size", "0"],
        ["eval", "--task", "gsm8k", "--sample", "--temperature", "-1"],
        ["eval", "--task", "gsm8k", "--top-p", "0"],
        ["eval", "--task", "gsm8k", "--limit", "many"],
        ["eval", "--task", "gsm8k", "--pass1-dtype", "float8"],
        ["eval", "--task", "gsm8k", "--data-dir", str(data), "--limit", "2"],
        ["eval", "--task", "arc-easy", "--model", str(bert), "--limit", "1"],
        ["eval", "--limit", "3"],
        ["eval", "--task", "[/]"],
        ["eval", "--task", "gsm8k", "--out", str(data / "gsm8k" / "test.jsonl")],
        ["score", "--task", "gsm8k", "--predictions", str(data / "gsm8k" / "test.jsonl"), "--out", str(scratch)],
        ["chat", "--cache-size", "0"],
        ["chat", "--max-new-tokens", "0"],
        ["chat", "--population", "1"],
        ["demo", "--max-new-tokens", "0"],
        ["demo", "--adapt", "cem"],
        ["decompose", "--force", "true"],
        ["decompose", "--svd-dtype", "float16"],
        ["info", "false"],
        ["info", "--memory", "--gpu-memory", "-8"],
        ["train", "--task", "gsm8k", "--iters", "0"],
        ["train", "--task", "gsm8k", "--batch-size", "0"],
        ["train", "--task", "gsm8k", "--temperature", "-1"],
        ["export", "reasoning", "--merged", str(scratch / "out"), "--dtype", "int8"],
        ["evl", "--task", "gsm8k"],
    ]


def main() -> None:
    scratch = Path(tempfile.mkdtemp(prefix="t2-bad-input-"))
    print("| command | exit | output (every line) |")
    print("|---|---|---|")
    for args in bad_inputs(scratch):
        result = subprocess.run(
            [sys.executable, "-m", "t2cli.cli.app", *args],
            capture_output=True,
            text=True,
            env=os.environ | {"COLUMNS": "200", "TRANSFORMERS_VERBOSITY": "error"},
        )
        lines = [line for line in (result.stdout + result.stderr).splitlines() if line.strip()]
        shown = " ".join(args).replace(str(scratch), "$TMP")
        text = "<br>".join(line.replace(str(scratch), "$TMP").replace("|", "\\|") for line in lines)
        print(f"| `t2 {shown}` | {result.returncode} | {text} |")


if __name__ == "__main__":
    main()
