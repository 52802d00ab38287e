"""Tasks: registry, splits, prompts, malformed rows, data lookup and reference answers.

Code tasks run a fixed subset of their test split through the sandbox; set T2_FULL_TASK_CHECKS=1
to run every example of every code split (several minutes), or score the references with
``t2 score`` (see `t2cli.scoring.reference_predictions`).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from t2cli.scoring import score_outputs
from t2cli.tasks import (
    TASKS,
    MissingSplitError,
    UnknownSplitError,
    UnknownTaskError,
    dispatch_messages,
    get_task,
    make_arc_task,
    parse_dispatch_label,
)
from t2cli.tasks import base as task_base
from t2cli.tasks.cls import DISPATCH_LABELS, build_cls_splits
from t2cli.tasks.mbpp import MBPP_PLUS, _plus_program

FULL = os.environ.get("T2_FULL_TASK_CHECKS") == "1"
WRONG_OUTPUTS = ("def f(): pass", "")

# ---------------------------------------------------------------------------------------------
# Registry
# ---------------------------------------------------------------------------------------------


def test_registry_names_and_domains() -> None:
    assert set(TASKS) == {"gsm8k", "mbpp-plus", "arc-easy", "math", "humaneval", "arc-challenge", "mbpp", "cls"}
    assert {t.domain for t in TASKS.values()} == {"math", "code", "reasoning", "classification"}
    for name, task in TASKS.items():
        assert task.name == name and task.description and task.max_new_tokens > 0


@pytest.mark.parametrize(
    ("alias", "name"),
    [
        ("GSM8K", "gsm8k"),
        ("mbpp_plus", "mbpp-plus"),
        ("mbpp-pro", "mbpp-plus"),
        ("ARC_Easy", "arc-easy"),
        ("human-eval", "humaneval"),
    ],
)
def test_get_task_aliases(alias: str, name: str) -> None:
    assert get_task(alias) is TASKS[name]


def test_unknown_task_lists_valid_names() -> None:
    with pytest.raises(UnknownTaskError, match="gsm8k.*humaneval") as info:
        get_task("nope")
    assert isinstance(info.value, ValueError)


def test_unknown_split() -> None:
    with pytest.raises(UnknownSplitError, match="train, validation, test"):
        get_task("gsm8k").load("dev")


# ---------------------------------------------------------------------------------------------
# Splits
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("task", "split", "size"),
    [
        ("gsm8k", "train", 3737),
        ("gsm8k", "validation", 3736),
        ("gsm8k", "test", 1319),
        ("arc-easy", "train", 1126),
        ("arc-easy", "validation", 1125),
        ("arc-easy", "test", 2376),
        ("arc-easy", "dev", 570),
        ("arc-challenge", "train", 560),
        ("arc-challenge", "validation", 559),
        ("arc-challenge", "dev", 299),
        ("mbpp-plus", "train", 200),
        ("mbpp-plus", "validation", 100),
        ("mbpp-plus", "test", 99),
        ("mbpp", "train", 374),
        ("mbpp", "validation", 90),
        ("mbpp", "test", 500),
        ("humaneval", "test", 164),
        ("math", "test", 200),
        ("cls", "train", 600),
        ("cls", "validation", 200),
        ("cls", "test", 200),
    ],
)
def test_split_sizes(task: str, split: str, size: int) -> None:
    data = get_task(task).load(split)
    assert len(data) == size
    assert data.skipped == 0
    ids = [ex["id"] for ex in data.examples]
    assert len(set(ids)) == size and all(isinstance(i, str) for i in ids)


def test_gsm8k_halves_are_even_and_odd_rows() -> None:
    task = get_task("gsm8k")
    train, validation = task.load("train").examples, task.load("validation").examples
    assert [ex["id"] for ex in train[:3]] == ["train-0", "train-2", "train-4"]
    assert [ex["id"] for ex in validation[:3]] == ["train-1", "train-3", "train-5"]
    assert train[0]["answer"] == "72" and task.load("test").examples[0]["answer"] == "18"


def test_arc_halves_are_disjoint() -> None:
    task = get_task("arc-easy")
    train = {ex["id"] for ex in task.load("train").examples}
    validation = {ex["id"] for ex in task.load("validation").examples}
    assert not train & validation and len(train | validation) == 2251


def test_mbpp_plus_paper_split() -> None:
    task = get_task("mbpp-plus")
    train = [ex["id"] for ex in task.load("train").examples]
    validation = [ex["id"] for ex in task.load("validation").examples]
    test = [ex["id"] for ex in task.load("test").examples]
    assert train[:3] == ["Mbpp/229", "Mbpp/128", "Mbpp/605"]  # random.Random(16).shuffle of the first 300
    assert not set(train) & set(validation) and len(set(train) | set(validation)) == 300
    assert test[0] == "Mbpp/616" and test[-1] == "Mbpp/809"
    assert not set(test) & (set(train) | set(validation))
    plus_empty = next(ex for ex in task.load("test").examples if ex["id"] == "Mbpp/793")
    assert plus_empty["plus_input"] == []  # shipped as {} in MBPP+ v0.1.0


def test_mbpp_splits_follow_task_id_ranges() -> None:
    task = get_task("mbpp")
    for split, (low, high) in {"train": (601, 974), "validation": (511, 600), "test": (11, 510)}.items():
        assert all(low <= int(ex["id"]) <= high for ex in task.load(split).examples)


# ---------------------------------------------------------------------------------------------
# Prompts
# ---------------------------------------------------------------------------------------------


def _user(task: str, split: str = "test") -> tuple[dict, str]:
    example = get_task(task).load(split).examples[0]
    messages = get_task(task).messages(example)
    assert messages[-1]["role"] == "user"
    return example, messages[-1]["content"]


def test_prompts() -> None:
    example, text = _user("gsm8k")
    assert text.startswith(example["question"]) and "The answer is N" in text
    example, text = _user("arc-easy")
    assert example["question"] in text and "(A) Sunlight" in text and '"The answer is (X)"' in text
    assert "A, B, C or D" in text
    _, text = _user("mbpp")
    assert 'assert remove_Occ("hello","l") == "heo"' in text and "```python" in text
    _, text = _user("mbpp-plus")
    assert text.startswith("Write a function which takes two tuples") and "assert tuple_modulo(" in text
    assert '"""' not in text
    _, text = _user("humaneval")
    assert "def has_close_elements(numbers: List[float], threshold: float) -> bool:" in text
    _, text = _user("math")
    assert "\\boxed{}" in text
    for name in ("gsm8k", "arc-easy", "mbpp", "mbpp-plus", "humaneval", "math"):
        assert len(get_task(name).messages(get_task(name).load("test").examples[0])) == 1  # no system


def test_arc_numeric_labels_prompt_and_check() -> None:
    task = get_task("arc-easy")
    example = next(ex for ex in task.load("train").examples if ex["labels"][0] == "1")
    assert "(1) " in task.prompt(example) and "1, 2, 3 or 4" in task.prompt(example)
    assert task.check(f"The answer is ({example['answer']}).", example)


def test_arc_random_letter_credit_variant() -> None:
    strict = get_task("arc-easy")
    lenient = make_arc_task("arc-easy", "arc_easy", "ARC-Easy", "x", random_letter_credit=True, credit_seed=3)
    examples = strict.load("validation").examples[:400]
    assert sum(strict.check_many(["no idea"] * 400, examples)) == 0
    credited = lenient.check_many(["no idea"] * 400, examples)
    assert 50 < sum(credited) < 160
    assert credited == lenient.check_many(["no idea"] * 400, examples)  # deterministic per example id


# ---------------------------------------------------------------------------------------------
# Data lookup and malformed rows
# ---------------------------------------------------------------------------------------------


def _write(path: Path, lines: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def test_malformed_rows_are_skipped_and_counted(tmp_path: Path) -> None:
    _write(
        tmp_path / "gsm8k/test.jsonl",
        [
            json.dumps({"question": "1+1?", "answer": "1+1=2\n#### 2"}),
            "{not json",
            json.dumps({"question": "no answer field"}),
            json.dumps({"question": "no hashes", "answer": "it is 3"}),
            json.dumps(["a", "list"]),
            "",
            json.dumps({"question": "", "answer": "#### 4"}),
            json.dumps({"question": "2+2?", "answer": "#### 4"}),
        ],
    )
    data = get_task("gsm8k").load("test", data_dir=tmp_path)
    assert [ex["answer"] for ex in data.examples] == ["2", "4"]
    assert data.skipped == 5 and data.source == "--data-dir:gsm8k/test.jsonl"


def test_malformed_arc_and_code_rows(tmp_path: Path) -> None:
    good = {"id": "q1", "question": "Q?", "choices": {"text": ["x", "y"], "label": ["A", "B"]}, "answerKey": "B"}
    _write(
        tmp_path / "arc_challenge/test.jsonl",
        [
            json.dumps(good),
            json.dumps({**good, "answerKey": "C"}),
            json.dumps({**good, "choices": {"text": ["x"], "label": ["A", "B"]}}),
            json.dumps({**good, "choices": None}),
        ],
    )
    data = get_task("arc-challenge").load("test", data_dir=tmp_path)
    assert len(data) == 1 and data.skipped == 3
    _write(tmp_path / "humaneval/test.jsonl", [json.dumps({"task_id": "H/0", "prompt": "def f():\n"})])
    assert get_task("humaneval").load("test", data_dir=tmp_path).skipped == 1


def test_lookup_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    row = json.dumps({"question": "env?", "answer": "#### 1"})
    _write(tmp_path / "env/gsm8k/test.jsonl", [row])
    _write(tmp_path / "arg/gsm8k/test.jsonl", [row, row])
    monkeypatch.setenv("T2_DATA_DIR", str(tmp_path / "env"))
    assert len(get_task("gsm8k").load("test")) == 1  # $T2_DATA_DIR before the bundled data
    assert len(get_task("gsm8k").load("test", data_dir=tmp_path / "arg")) == 2  # --data-dir first
    assert len(get_task("gsm8k").load("train")) == 3737  # files missing there fall through to bundled


def test_missing_split_error_says_where_and_how(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def offline(hub: task_base.HubSource) -> list:
        raise OSError("the Hub (huggingface.co) is unreachable: offline")

    monkeypatch.setattr(task_base, "_hub_rows", offline)
    monkeypatch.delenv("T2_DATA_DIR", raising=False)
    with pytest.raises(MissingSplitError) as info:
        get_task("arc-challenge").load("test", data_dir=tmp_path)
    message = str(info.value)
    for part in (
        "arc_challenge/test.jsonl",
        str(tmp_path),
        "bundled data",
        "allenai/ai2_arc",
        "unreachable",
        "--data-dir DIR",
        "answerKey",
    ):
        assert part in message
    assert isinstance(info.value, FileNotFoundError)


def test_hub_fallback_when_available(monkeypatch: pytest.MonkeyPatch) -> None:
    rows = [{"id": "h1", "question": "Q?", "choices": {"text": ["x", "y"], "label": ["A", "B"]}, "answerKey": "A"}]
    seen = []

    def hub(source: task_base.HubSource) -> list:
        seen.append(source)
        return rows

    monkeypatch.setattr(task_base, "_hub_rows", hub)
    data = get_task("arc-challenge").load("test")
    assert len(data) == 1 and data.source.startswith("hub:allenai/ai2_arc")
    assert seen[0] == task_base.HubSource("allenai/ai2_arc", "ARC-Challenge", "test")


def test_hub_probe_fails_fast_without_network(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)

    def no_network(*args: object, **kwargs: object) -> None:
        raise OSError("Name or service not known")

    monkeypatch.setattr(task_base.socket, "create_connection", no_network)
    task_base._hub_unreachable_reason.cache_clear()
    try:
        started = time.perf_counter()
        with pytest.raises(OSError, match="unreachable: Name or service not known"):
            task_base._hub_rows(task_base.HubSource("allenai/ai2_arc", "ARC-Challenge", "test"))
        assert time.perf_counter() - started < 1.0
    finally:
        task_base._hub_unreachable_reason.cache_clear()


def test_hub_offline_mode_fails_fast(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    task_base._hub_unreachable_reason.cache_clear()
    try:
        started = time.perf_counter()
        with pytest.raises(MissingSplitError, match="offline mode"):
            get_task("arc-challenge").load("test", data_dir=tmp_path)
        assert time.perf_counter() - started < 1.0
    finally:
        task_base._hub_unreachable_reason.cache_clear()


# ---------------------------------------------------------------------------------------------
# Reference answers score 100%, wrong ones 0%
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("task", "split"),
    [
        ("gsm8k", "test"),
        ("gsm8k", "train"),
        ("arc-easy", "test"),
        ("arc-challenge", "dev"),
        ("math", "test"),
        ("cls", "test"),
    ],
)
def test_text_tasks_reference_and_wrong(task: str, split: str) -> None:
    t = get_task(task)
    examples = t.load(split).examples
    assert score_outputs(t, examples, [t.reference_output(ex) for ex in examples]).accuracy == 1.0
    for wrong in WRONG_OUTPUTS:
        assert score_outputs(t, examples, [wrong] * len(examples)).accuracy == 0.0


CODE_SUBSET = {"mbpp": 60, "mbpp-plus": 33, "humaneval": 55}
# References that need most of the 10 s sandbox limit on a quiet 2-core machine (MBPP 123: 7.4 s), so
# they time out whenever the machine is loaded: left out of the subset, which is about the checkers.
SLOW_REFERENCES = {"123"}
CODE_SPLITS = [("mbpp", "test"), ("mbpp-plus", "test"), ("humaneval", "test")]
if FULL:
    CODE_SPLITS += [("mbpp", "train"), ("mbpp", "validation"), ("mbpp-plus", "train"), ("mbpp-plus", "validation")]


@pytest.mark.parametrize(("task", "split"), CODE_SPLITS)
def test_code_tasks_reference_and_wrong(task: str, split: str) -> None:
    t = get_task(task)
    examples = t.load(split).examples
    if not FULL:
        examples = examples[:: max(1, len(examples) // CODE_SUBSET[task])][: CODE_SUBSET[task]]
        examples = [ex for ex in examples if ex["id"] not in SLOW_REFERENCES]
    report = score_outputs(t, examples, [t.reference_output(ex) for ex in examples], max_workers=2)
    assert [r.id for r in report.rows if not r.correct] == []
    for wrong in WRONG_OUTPUTS:
        assert score_outputs(t, examples, [wrong] * len(examples), max_workers=2).correct == 0


def test_humaneval_body_only_and_helper_functions() -> None:
    task = get_task("humaneval")
    examples = {ex["id"]: ex for ex in task.load("test").examples}
    zero = examples["HumanEval/0"]
    body = zero["canonical_solution"]
    assert task.check(body, zero)  # a completion, already indented
    dedented = "\n".join(line[4:] for line in body.splitlines())
    assert task.check(f"```python\n{dedented}\n```", zero)  # a body block at column 0 is indented back
    # A whole function that relies on a helper defined only in the prompt (is_palindrome).
    ten = examples["HumanEval/10"]
    only_main = "def make_palindrome(string: str) -> str:\n" + ten["canonical_solution"]
    assert "def is_palindrome" not in only_main and task.check(f"```python\n{only_main}```", ten)
    assert not task.check("```python\ndef make_palindrome(string):\n    return string\n```", ten)


def test_code_answers_with_prose_and_example_usage() -> None:
    task = get_task("mbpp")
    example = task.load("test").examples[0]
    answer = (
        f"Here you go:\n```python\n{example['code']}\n\nassert remove_Occ('a', 'a') == 'wrong'\n"
        "print(remove_Occ('hello', 'l'))\n```\nThe function removes the first and last occurrence."
    )
    assert task.check(answer, example)
    assert task.extract(answer, example).startswith("def remove_Occ")


def _plus_example(**overrides: object) -> dict:
    example = {
        "id": "Mbpp/9999",
        "task_number": 9999,
        "entry_point": "add",
        "atol": 0.0,
        "canonical_solution": "def add(a, b):\n    return a + b\n",
        "base_input": [[1, 2], [3, 4]],
        "plus_input": [[10**20, 1], [-5, 5]],
        "text": "t",
        "example_test": "assert add(1, 2) == 3",
    }
    return {**example, **overrides}


@pytest.mark.parametrize(
    ("overrides", "solution", "passes"),
    [
        ({}, "def add(a, b):\n    return b + a\n", True),
        ({}, "def add(a, b):\n    return {(1, 2): 3, (3, 4): 7}[(a, b)]\n", False),  # base only
        ({}, "def plus(a, b):\n    return a + b\n", False),  # wrong name
        # floats: 1e-6 tolerance when the data says atol 0; the dataset's atol otherwise
        (
            {"canonical_solution": "def add(a, b):\n    return a / b\n"},
            "def add(a, b):\n    return a / b + 1e-9\n",
            True,
        ),
        (
            {"canonical_solution": "def add(a, b):\n    return a / b\n"},
            "def add(a, b):\n    return a / b + 1e-3\n",
            False,
        ),
        (
            {"canonical_solution": "def add(a, b):\n    return a / b\n", "atol": 0.01},
            "def add(a, b):\n    return a / b + 1e-3\n",
            True,
        ),
        (
            {"canonical_solution": "def add(a, b):\n    return [a / b]\n"},
            "def add(a, b):\n    return (a / b,)\n",
            False,
        ),  # the type must match when inexact
        # EvalPlus's type restoration: Mbpp/616 takes tuples, so tuple concatenation works
        (
            {
                "task_number": 616,
                "canonical_solution": "def add(a, b):\n    return tuple(x + y for x, y in zip(a, b))\n",
                "base_input": [[[1, 2], [3, 4]]],
                "plus_input": [[[5], [6]]],
            },
            "def add(a, b):\n    return tuple(x + y for x, y in zip(a + (0,), b + (0,)))[:len(a)]\n",
            True,
        ),
        # set-equality tasks ignore order
        (
            {
                "entry_point": "similar_elements",
                "canonical_solution": "def similar_elements(a, b):\n    return tuple(sorted(set(a) & set(b)))\n",
                "base_input": [[[3, 4, 5], [5, 4, 7]]],
                "plus_input": [],
            },
            "def similar_elements(a, b):\n    return tuple(sorted(set(a) & set(b), reverse=True))\n",
            True,
        ),
        # each input gets max(1 s, 4x the canonical time)
        ({}, "import time\ndef add(a, b):\n    time.sleep(1.5)\n    return a + b\n", False),
        # inputs are copied: mutating them does not change what the canonical solution sees
        (
            {
                "canonical_solution": "def add(a, b):\n    a.append(b)\n    return len(a)\n",
                "base_input": [[[1], 2]],
                "plus_input": [[[1, 2], 3]],
            },
            "def add(a, b):\n    a.append(b)\n    return len(a)\n",
            True,
        ),
    ],
)
def test_mbpp_plus_differential_checks(overrides: dict, solution: str, passes: bool) -> None:
    from t2cli.checkers import run_check_programs

    program = _plus_program(solution, _plus_example(**overrides))
    assert run_check_programs([program], wall_time_s=20.0) == [passes]


def test_mbpp_plus_check_uses_task_extractor() -> None:
    example = _plus_example()
    assert MBPP_PLUS.check("```python\ndef add(a, b):\n    return a + b\n```", example)
    assert not MBPP_PLUS.check("I don't know", example)


def test_reward_is_plus_minus_one_and_accepts_chat_completions() -> None:
    task = get_task("gsm8k")
    examples = task.load("test").examples[:2]
    completions = ["The answer is 18.", [{"role": "assistant", "content": "The answer is 5."}]]
    assert task.reward(completions, examples) == [1.0, -1.0]
    with pytest.raises(ValueError):
        task.check_many(["a"], examples)


# ---------------------------------------------------------------------------------------------
# Dispatch classification
# ---------------------------------------------------------------------------------------------


def test_cls_is_built_from_training_splits_only() -> None:
    splits, skipped, source = build_cls_splits()
    assert skipped == 0 and "gsm8k:train" in source
    train_ids = {
        name: {ex["id"] for ex in get_task(name).load("train").examples} for name in ("gsm8k", "mbpp-plus", "arc-easy")
    }
    counts: dict[str, int] = {}
    seen: set[str] = set()
    for examples in splits.values():
        for ex in examples:
            source_task, _, original = ex["id"].partition(":")
            assert original in train_ids[source_task] and ex["source_task"] == source_task
            counts[ex["answer"]] = counts.get(ex["answer"], 0) + 1
            assert ex["id"] not in seen
            seen.add(ex["id"])
    assert counts == {"math": 400, "code": 200, "reasoning": 400}
    assert build_cls_splits()[0] == splits  # deterministic
    test_labels = {ex["answer"] for ex in splits["test"]}
    assert test_labels == {"math", "code", "reasoning"}


def test_cls_question_is_the_source_prompt() -> None:
    example = next(ex for ex in get_task("cls").load("train").examples if ex["source_task"] == "arc-easy")
    assert '"The answer is (X)"' in example["question"]
    messages = get_task("cls").messages(example)
    assert messages == dispatch_messages(example["question"], DISPATCH_LABELS)
    assert messages[0]["role"] == "system" and "category name only" in messages[0]["content"]
    assert "other" in messages[0]["content"] and messages[1]["content"].endswith(example["question"].strip())


def test_dispatch_messages_custom_labels() -> None:
    messages = dispatch_messages("Translate this.", ["math", "translation"])
    assert "- translation" in messages[0]["content"] and "- other" in messages[0]["content"]
    assert "(math, translation, other)" in messages[0]["content"]


@pytest.mark.parametrize(
    ("output", "expected"),
    [
        (r"\boxed{math}", "math"),
        (r"This is a coding request. \boxed{code}", "code"),
        (r"\boxed{\text{Reasoning}}", "reasoning"),
        (r"\boxed{'math'}", "math"),
        (r"\boxed{Math.}", "math"),
        (r"\boxed{the math category}", "math"),
        (r"\boxed{other}", "other"),
        (r"\boxed{others}", "other"),
        (r"\boxed{math or code}", "other"),
        (r"\boxed{cooking}", "other"),
        ("math", "math"),  # the classification expert's answer: the bare name
        ("Reasoning.\nBecause it asks", "reasoning"),
        ("other", "other"),
        ("The answer is math", "other"),  # a bare name must come first
        ("2 + 2 = 4", "other"),
        ("", "other"),
        (r"\boxed{math", "other"),
    ],
)
def test_parse_dispatch_label(output: str, expected: str) -> None:
    assert parse_dispatch_label(output, DISPATCH_LABELS) == expected
