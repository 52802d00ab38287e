"""Time the scoring of long model outputs (extraction in the evaluator + the sandboxed check).

Run from the repository root: OMP_NUM_THREADS=1 python docs/reliability/long_outputs.py
"""

import time

from t2cli.tasks.mbpp import MBPP

EXAMPLE = {
    "id": "1",
    "text": "Add two numbers.",
    "code": "def add(a, b):\n    return a + b\n",
    "test_list": ["assert add(1, 2) == 3", "assert add(2, 2) == 4"],
    "test_setup_code": "",
    "entry_point": "add",
}
CODE = "def add(a, b):\n    return a + b\n"


def prose(lines: int) -> str:
    return "".join(f"This line {i} explains how add works.\n" for i in range(lines))


CASES = {
    "unfenced code + 2,000 lines of prose": CODE + prose(2_000),
    "unfenced code + 20,000 lines of prose": CODE + prose(20_000),
    "unfenced code + 10 MB of prose": CODE + prose(270_000),
    "fenced code + 10 MB of prose": f"```python\n{CODE}```\n" + prose(270_000),
    "a correct program printing 70 KB": "```python\ndef add(a, b):\n    print('x' * 70_000)\n    return a + b\n```",
}
for name, output in CASES.items():
    start = time.perf_counter()
    MBPP.extract(output, EXAMPLE)
    extract_s = time.perf_counter() - start
    start = time.perf_counter()
    correct = MBPP.check(output, EXAMPLE)
    scored_s = time.perf_counter() - start
    print(f"{name} ({len(output):,} chars): extraction {extract_s:.2f} s, scored in {scored_s:.2f} s, ok={correct}")
