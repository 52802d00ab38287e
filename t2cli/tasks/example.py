"""`Example`: one item of a task — an explicit, always-present id plus the task's own fields.

An example reads like the dict it replaces (``example["question"]``, ``example.get("id")``,
``{**example}``, ``dict(example)``) so code that scores, trains or dispatches needs no change, but
it is immutable and cannot exist without an id: the id is what predictions files, cem shots and
reports refer to, so a task that forgot it would fail late and far away.

>>> example = Example("gsm8k-0", question="What is 2 + 3?", answer="5")
>>> example.id, example["id"], example["answer"], sorted(example)
('gsm8k-0', 'gsm8k-0', '5', ['answer', 'id', 'question'])
>>> example == {"id": "gsm8k-0", "question": "What is 2 + 3?", "answer": "5"}
True
>>> Example.of({"question": "Hi"}, fallback_id="row-7").id
'row-7'
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any


class Example(Mapping[str, Any]):
    """An immutable mapping ``{"id": id, **fields}`` whose id is a non-empty string."""

    __slots__ = ("_fields", "_id")
    _id: str
    _fields: dict[str, Any]

    def __init__(self, id: str, /, **fields: Any) -> None:  # noqa: A002 (the field is called id)
        if not isinstance(id, str) or not id:
            raise ValueError(f"an example id must be a non-empty string, not {id!r}")
        if "id" in fields:
            raise ValueError("give the id once, as the first argument")
        object.__setattr__(self, "_id", id)
        object.__setattr__(self, "_fields", fields)

    @classmethod
    def of(cls, value: Mapping[str, Any], fallback_id: str | None = None) -> Example:
        """``value`` as an Example: its own "id" (made a string) or else ``fallback_id``."""
        if isinstance(value, Example):
            return value
        if not isinstance(value, Mapping):
            raise TypeError(f"an example must be a mapping of fields, not {type(value).__name__}")
        fields = dict(value)
        own = fields.pop("id", None)
        example_id = str(own) if own not in (None, "") else fallback_id
        if example_id is None:
            raise ValueError(f"the example has no 'id' (fields: {', '.join(fields) or 'none'})")
        return cls(example_id, **fields)

    @property
    def id(self) -> str:
        return self._id

    @property
    def fields(self) -> Mapping[str, Any]:
        """The task's fields, without the id."""
        return dict(self._fields)

    def to_dict(self) -> dict[str, Any]:
        """A plain dict (for JSON): ``{"id": …, **fields}``."""
        return {"id": self._id, **self._fields}

    # -- the Mapping protocol: "id" first, then the fields in their order
    def __getitem__(self, key: str) -> Any:
        return self._id if key == "id" else self._fields[key]

    def __iter__(self) -> Iterator[str]:
        yield "id"
        yield from self._fields

    def __len__(self) -> int:
        return 1 + len(self._fields)

    def __contains__(self, key: object) -> bool:
        return key == "id" or key in self._fields

    # -- immutable, picklable, readable
    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("an Example is immutable: build a new one with Example(id, **fields)")

    def __reduce__(self) -> tuple:
        return (_rebuild, (self._id, self._fields))

    def __repr__(self) -> str:
        fields = "".join(f", {key}={value!r}" for key, value in self._fields.items())
        return f"Example({self._id!r}{fields})"


def _rebuild(example_id: str, fields: dict[str, Any]) -> Example:
    return Example(example_id, **fields)
