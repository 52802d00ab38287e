"""Write docs/data/arithmetic.jsonl: 60 simple arithmetic word problems, fields "problem" / "answer".

A data file t2 has never seen, for the README's "a task from a data file" walk-through:
    python docs/data/make_arithmetic.py      # seeded: the same 60 problems every time
"""

from __future__ import annotations

import json
import random
from pathlib import Path

NAMES = ["Ana", "Ben", "Chen", "Dara", "Eli", "Fay", "Gus", "Hana", "Ivo", "Jun"]
THINGS = ["apples", "pencils", "stickers", "marbles", "books", "cookies", "stamps", "shells"]


def problem(rng: random.Random) -> tuple[str, int]:
    name, other, thing = rng.choice(NAMES), rng.choice(NAMES), rng.choice(THINGS)
    a, b = rng.randint(2, 30), rng.randint(2, 20)
    kind = rng.choice(["add", "sub", "mul", "give"])
    if kind == "add":
        return f"{name} has {a} {thing} and buys {b} more. How many {thing} does {name} have now?", a + b
    if kind == "sub":
        a = a + b
        return f"{name} has {a} {thing} and gives away {b}. How many {thing} are left?", a - b
    if kind == "mul":
        a, b = rng.randint(2, 9), rng.randint(2, 9)
        return f"{name} has {a} boxes with {b} {thing} in each box. How many {thing} are there in all?", a * b
    return (
        f"{name} has {a} {thing}. {other} has {b} more {thing} than {name}. How many {thing} do they have together?",
        a + (a + b),
    )


def main() -> None:
    rng = random.Random(2026)
    rows = []
    for i in range(60):
        text, answer = problem(rng)
        rows.append({"id": f"arith-{i}", "problem": text, "answer": str(answer)})
    out = Path(__file__).with_name("arithmetic.jsonl")
    out.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    print(f"wrote {len(rows)} problems to {out}")


if __name__ == "__main__":
    main()
