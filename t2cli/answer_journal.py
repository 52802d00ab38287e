"""The answers of a running evaluation, kept on disk batch by batch, so that a cut-off run goes on.

An evaluation with an output directory appends each finished batch of answers to
DIR/predictions.partial.jsonl — `t2 score`'s {"id", "output"} rows, plus the batch they belong to,
their length and whether the token budget ended them (and a one-pass answer's token ids, a two-pass
answer's label and pass-2 times) — and states what the run is (task, split, subset, model, what
answers, how answers are generated) in DIR/predictions.partial.json. Other state of the unfinished
run (a pass-1 search's, `partial_path`) lies beside them and goes with them.

Opened with `resume=True`, the journal reads both back: when the run is the same one, the answers
of its finished batches are reused and only the rest is generated. Greedy answers then equal an
unbroken run's token for token: `t2cli.generation.generate` batches prompts in length order, and
the prompts not yet answered — whole batches of that order — sort, in the same order, into the
same remaining batches (a two-pass run decides every prompt again and does this per expert). A
batch that was being written when the run was killed is generated again.
Opened without it, a directory holding an unfinished run's answers is refused rather than
overwritten: hours of answers are never lost silently.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from t2cli.errors import T2Error
from t2cli.files import atomic_write_text
from t2cli.generation import Completion

if TYPE_CHECKING:
    from t2cli.adaptive import AdaptiveAnswer
    from t2cli.tasks.base import Task

ANSWERS_FILE = "predictions.partial.jsonl"
RUN_FILE = "predictions.partial.json"


class JournalError(T2Error, ValueError):
    """A journal that cannot be continued (another run's, none at all) or must not be overwritten."""


def answer_fields(answer: Completion | AdaptiveAnswer) -> dict:
    """What a journal row keeps of an answer: its text, length and whether the budget ended it;
    a one-pass answer's token ids, a two-pass answer's label and pass-2 times."""
    fields = {"output": answer.text, "new_tokens": answer.num_new_tokens, "cut_off": answer.cut_off}
    if isinstance(answer, Completion):
        return fields | {"completion_ids": list(answer.completion_ids)}
    return fields | {"label": answer.decision.label, "pass2_s": answer.pass2_s, "switch_s": answer.switch_s}


def flat(run: Mapping, prefix: str = "") -> dict:
    """{"generation.max_new_tokens": 320, …}: nested settings under dotted names."""
    items: dict = {}
    for key, value in run.items():
        if isinstance(value, Mapping):
            items |= flat(value, f"{prefix}{key}.")
        else:
            items[f"{prefix}{key}"] = value
    return items


class AnswerJournal:
    """Finished answers of the evaluation `run` (a JSON-ready description of it) in `directory`."""

    def __init__(self, directory: str | Path, run: Mapping, *, resume: bool = False):
        self.directory = Path(directory)
        self.path = self.directory / ANSWERS_FILE
        self.run_path = self.directory / RUN_FILE
        self.run = json.loads(json.dumps(run))  # as it reads back from the file (tuples become lists)
        self.rows: list[dict] = []  # every kept answer row, the reused ones first
        self.side_files: list[Path] = []  # other state of the unfinished run (`partial_path`)
        self.reused = 0
        if resume:
            self._read_back()
        elif self.path.exists() and self.path.stat().st_size:
            kept = sum(1 for line in self.path.read_text(encoding="utf-8").splitlines() if line.strip())
            raise JournalError(
                f"{self.directory} holds {kept} answers of an evaluation that did not finish: add --resume to "
                f"continue it, or delete {self.path} to start over"
            )
        self._batches = 1 + max((row["batch"] for row in self.rows), default=-1)

    # ------------------------------------------------------------------ reading back

    def _read_back(self) -> None:
        if not self.path.exists() or not self.run_path.exists():
            finished = " (its report.json is finished)" if (self.directory / "report.json").exists() else ""
            raise JournalError(
                f"nothing to resume in {self.directory}: no {ANSWERS_FILE} with its {RUN_FILE}{finished}; "
                "drop --resume to start the evaluation"
            )
        recorded = json.loads(self.run_path.read_text(encoding="utf-8"))
        if recorded != self.run:
            there, now = flat(recorded), flat(self.run)
            differences = [
                f"{key} {there.get(key)!r} there, {now.get(key)!r} now"
                for key in sorted(set(there) | set(now))
                if there.get(key) != now.get(key)
            ]
            raise JournalError(
                f"the answers in {self.directory} belong to another evaluation ({'; '.join(differences)}): "
                "run it as it was, or choose another --out"
            )
        rows = []
        for line in self.path.read_text(encoding="utf-8").splitlines():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                break  # the line being written when the run was killed, and nothing after it
        needed = {"id", "output", "batch", "batch_rows", "new_tokens", "cut_off"}
        if any(not isinstance(row, dict) or not needed <= set(row) for row in rows):
            raise JournalError(
                f"{self.path} is not a journal of answers t2 wrote (each row needs {', '.join(sorted(needed))}): "
                "delete it to start the evaluation over"
            )
        counts: dict[int, int] = {}
        for row in rows:
            counts[row["batch"]] = counts.get(row["batch"], 0) + 1
        self.rows = [row for row in rows if counts[row["batch"]] == row["batch_rows"]]
        self.reused = len(self.rows)
        self._rewrite()  # drop what an unfinished batch left, so that appending continues cleanly

    def finished(self) -> dict[str, Completion]:
        """The reused answers by example id (empty unless resuming)."""
        return {
            row["id"]: Completion(row["output"], row.get("completion_ids", []), [], row["new_tokens"], row["cut_off"])
            for row in self.rows
        }

    def finished_two_pass(self) -> dict[str, AdaptiveAnswer]:
        """The reused answers of a two-pass run by example id, each with the label pass 1 chose
        (its decision is made again when the run goes on)."""
        from t2cli.adaptive import AdaptiveAnswer
        from t2cli.dispatch.base import Decision

        return {
            row["id"]: AdaptiveAnswer(
                row["output"],
                Decision(row["label"]),
                0.0,
                row["pass2_s"],
                row["new_tokens"],
                row["switch_s"],
                row["cut_off"],
            )
            for row in self.rows
            if "label" in row
        }

    # ------------------------------------------------------------------ writing

    def add(self, examples: Sequence[dict], answers: Sequence[Completion] | Sequence[AdaptiveAnswer]) -> None:
        """Append one finished batch (the run's description is written with the first)."""
        if not self.rows or not self.run_path.exists():
            atomic_write_text(self.run_path, json.dumps(self.run, indent=2, sort_keys=True) + "\n")
        batch = [
            {"id": str(example["id"]), "batch": self._batches, "batch_rows": len(answers)} | answer_fields(answer)
            for example, answer in zip(examples, answers)
        ]
        mode = "a" if self.rows else "w"
        with open(self.path, mode, encoding="utf-8") as f:
            f.write("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in batch))
        self.rows += batch
        self._batches += 1

    def _rewrite(self) -> None:
        atomic_write_text(self.path, "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in self.rows))

    def partial_path(self, name: str) -> Path:
        """DIR/NAME.partial.json: where other state of the unfinished run is kept (a pass-1
        search's, which continues from it), removed with the journal when the run finishes."""
        path = self.directory / f"{name}.partial.json"
        self.side_files.append(path)
        return path

    def close(self) -> None:
        """The run's report holds the answers now: remove the journal."""
        for path in (self.path, self.run_path, *self.side_files):
            path.unlink(missing_ok=True)

    # ------------------------------------------------------------------ an interrupted run

    def keep_interrupted(self, task: Task, examples: Sequence[dict]) -> str:
        """Score the kept answers into samples.jsonl beside them; the line to tell the user.

        `examples` are the split's examples (those of the kept answers are looked up by id)."""
        if not self.rows:
            kept = [str(path) for path in self.side_files if path.exists()]
            if kept:
                return (
                    f"interrupted before the first answer: the search so far is kept in {', '.join(kept)}; "
                    "the same command goes on from it"
                )
            return "interrupted before the first batch finished: no answers to keep"
        from t2cli.scoring import score_outputs

        by_id = {str(example["id"]): example for example in examples}
        kept = [row for row in self.rows if row["id"] in by_id]
        try:
            scored = score_outputs(task, [by_id[row["id"]] for row in kept], [row["output"] for row in kept])
        except KeyboardInterrupt:
            return f"interrupted: {len(kept)} finished answers kept (unscored) in {self.path}"
        samples = self.directory / "samples.jsonl"
        atomic_write_text(
            samples,
            "".join(
                json.dumps(
                    {"id": row.id, "output": kept_row["output"], "extracted": row.extracted, "correct": row.correct},
                    ensure_ascii=False,
                )
                + "\n"
                for row, kept_row in zip(scored.rows, kept)
            ),
        )
        return (
            f"interrupted: the {scored.n} finished answers are kept ({scored.correct} correct) in {samples} "
            f"and {self.path}; the same command with --resume continues the run"
        )
