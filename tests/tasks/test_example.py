"""`Example`: an explicit id, read like the dict it replaces, immutable."""

from __future__ import annotations

import copy
import json
import pickle

import pytest

from t2cli.tasks import Example, TaskData, get_task


def test_an_example_reads_like_a_dict_with_its_id_first() -> None:
    example = Example("q-1", question="2 + 3?", answer="5")
    assert example.id == example["id"] == example.get("id") == "q-1"
    assert list(example) == ["id", "question", "answer"] and len(example) == 3
    assert dict(example) == {**example} == example.to_dict() == {"id": "q-1", "question": "2 + 3?", "answer": "5"}
    assert example == {"id": "q-1", "question": "2 + 3?", "answer": "5"}
    assert "answer" in example and "id" in example and "missing" not in example
    assert example.get("missing") is None and example.fields == {"question": "2 + 3?", "answer": "5"}
    assert json.loads(json.dumps(example.to_dict()))["id"] == "q-1"
    with pytest.raises(KeyError):
        example["missing"]


def test_an_example_is_immutable_and_survives_pickle_and_copy() -> None:
    example = Example("q-1", answer=["5"])
    with pytest.raises(AttributeError, match="immutable"):
        example.answer = "6"  # type: ignore[attr-defined]
    with pytest.raises(TypeError):
        example["answer"] = "6"  # type: ignore[index]
    for other in (pickle.loads(pickle.dumps(example)), copy.deepcopy(example)):
        assert other == example and other.id == "q-1" and isinstance(other, Example)


@pytest.mark.parametrize("bad", ["", None, 3])
def test_an_example_needs_a_string_id(bad) -> None:
    with pytest.raises(ValueError, match="non-empty string"):
        Example(bad)
    with pytest.raises(ValueError, match="once"):
        Example("a", id="b")


def test_of_takes_the_rows_own_id_else_the_fallback() -> None:
    assert Example.of({"id": 11, "text": "x"}).id == "11"  # MBPP's integer task ids become strings
    assert Example.of({"id": "", "text": "x"}, fallback_id="row-3").id == "row-3"
    with pytest.raises(ValueError, match="no 'id'.*text"):
        Example.of({"text": "x"})
    same = Example("a")
    assert Example.of(same) is same


def test_every_task_gives_examples_with_ids() -> None:
    for name in ("gsm8k", "arc-easy", "mbpp", "mbpp-plus", "humaneval", "math"):
        example = get_task(name).load("test").examples[0]
        assert isinstance(example, Example) and example.id
    data = TaskData([{"id": "x", "question": "q"}], 0, "inline")  # a task's own loader may give plain dicts
    assert isinstance(data.examples[0], Example) and data.examples[0].id == "x"
    with pytest.raises(ValueError, match="no 'id'"):
        TaskData([{"question": "q"}], 0, "inline")
