"""An evaluation cut off after some batches goes on from its journal to the unbroken run's answers."""

import json

import pytest
from conftest import count_generated_prompts

import t2cli.evaluate
from t2cli.answer_journal import AnswerJournal, JournalError
from t2cli.evaluate import EvalSpec, EvalSpecError, run_evaluation
from t2cli.generation import GenerationConfig
from t2cli.tasks import get_task

TASK = get_task("arc-easy")  # prompts of different lengths: the batches depend on the length order


class Killed(Exception):
    """Stands for the process being killed between two batches."""


def spec_for(llama, out, **changes):
    settings = dict(
        task=TASK, model=llama, limit=7, out=out, generation=GenerationConfig(max_new_tokens=6, batch_size=2)
    )
    return EvalSpec(**(settings | changes))


def killed_after(batches: int, journal: AnswerJournal) -> AnswerJournal:
    """The journal of a run that dies once `batches` batches are written."""
    real_add = journal.add

    def add(examples, completions):
        real_add(examples, completions)
        if journal._batches == batches:
            raise Killed

    journal.add = add
    return journal


def test_a_resumed_run_equals_the_unbroken_run_and_generates_only_the_rest(tmp_path, llama, monkeypatch):
    unbroken = run_evaluation(spec_for(llama, tmp_path / "unbroken"))
    spec = spec_for(llama, tmp_path / "cut")
    with pytest.raises(Killed):
        run_evaluation(spec, journal=killed_after(2, spec.open_journal()))
    assert len((tmp_path / "cut" / "predictions.partial.jsonl").read_text().splitlines()) == 4

    counts = count_generated_prompts(monkeypatch, t2cli.evaluate)
    resumed_spec = spec_for(llama, tmp_path / "cut", resume=True)
    journal = resumed_spec.open_journal()
    assert journal.reused == 4
    resumed = run_evaluation(resumed_spec, journal=journal)
    assert counts == [3]  # the two batches kept are not generated again
    assert [(s["id"], s["output"], s["correct"], s["cut_off"]) for s in resumed.samples] == [
        (s["id"], s["output"], s["correct"], s["cut_off"]) for s in unbroken.samples
    ]
    assert (resumed.correct, resumed.new_tokens, resumed.cut_off) == (
        unbroken.correct,
        unbroken.new_tokens,
        unbroken.cut_off,
    )
    assert resumed.config["resumed_answers"] == 4 and "resumed_answers" not in unbroken.config
    journal.close()
    assert not list((tmp_path / "cut").iterdir())


def test_a_batch_cut_off_while_written_is_generated_again(tmp_path, llama):
    spec = spec_for(llama, tmp_path / "cut")
    with pytest.raises(Killed):
        run_evaluation(spec, journal=killed_after(3, spec.open_journal()))
    answers = tmp_path / "cut" / "predictions.partial.jsonl"
    lines = answers.read_text().splitlines()
    answers.write_text("\n".join(lines[:5]) + "\n" + lines[5][:20])  # batch 3 half written, its last line torn
    journal = spec_for(llama, tmp_path / "cut", resume=True).open_journal()
    assert journal.reused == 4
    assert [json.loads(line)["batch"] for line in answers.read_text().splitlines()] == [0, 0, 1, 1]


def test_another_runs_answers_are_not_continued_nor_overwritten(tmp_path, llama):
    spec = spec_for(llama, tmp_path / "cut")
    with pytest.raises(Killed):
        run_evaluation(spec, journal=killed_after(1, spec.open_journal()))
    with pytest.raises(JournalError, match=r"another evaluation \(limit 7 there, 9 now\)"):
        spec_for(llama, tmp_path / "cut", limit=9, resume=True).open_journal()
    with pytest.raises(JournalError, match="holds 2 answers of an evaluation that did not finish: add --resume"):
        spec_for(llama, tmp_path / "cut").open_journal()
    with pytest.raises(JournalError, match="nothing to resume"):
        spec_for(llama, tmp_path / "elsewhere", resume=True).open_journal()
    answers = tmp_path / "cut" / "predictions.partial.jsonl"
    answers.write_text('{"id": "1", "output": "an answer kept by hand"}\n')
    with pytest.raises(JournalError, match="not a journal of answers t2 wrote"):
        spec_for(llama, tmp_path / "cut", resume=True).open_journal()


def test_resume_is_refused_where_it_cannot_continue_the_same_answers(tmp_path, llama):
    with pytest.raises(EvalSpecError, match="greedy"):
        spec_for(llama, tmp_path, resume=True, generation=GenerationConfig(do_sample=True))
    with pytest.raises(EvalSpecError, match="--out"):
        spec_for(llama, None, resume=True)
