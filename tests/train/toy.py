"""A toy task a random tiny model can earn reward on, and the worker of the 2-process test.

Reward: +1 when the completion contains the letter "e" (frequent in the tiny tokenizer's
vocabulary, so random models get a mix of +1 and −1). Run as a script under torchrun it trains
the tiny Llama of tests/conftest.py and saves the final z (see test_distributed.py).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/ (for conftest) when run as a script

from conftest import make_tokenizer, tiny_llama  # noqa: E402

from t2cli.tasks.base import Task, TaskData  # noqa: E402

try:
    import pytest

    @pytest.fixture(autouse=True)
    def one_thread():
        """Tiny models gain nothing from threads, and on a shared CPU extra threads oversubscribe it
        (an OpenMP barrier waiting for a descheduled thread made these tests 3× slower)."""
        import torch

        before = torch.get_num_threads()
        torch.set_num_threads(1)
        yield
        torch.set_num_threads(before)
except ImportError:  # the torchrun worker does not need pytest
    pass


def toy_examples(split: str, n: int = 12) -> list[dict]:
    offset = 0 if split == "train" else 100
    return [
        {"id": f"{split}-{i}", "question": f"What is {i + offset} + 2?", "answer": f"{i + offset + 2}"}
        for i in range(n)
    ]


def toy_task(max_new_tokens: int = 6) -> Task:
    return Task(
        name="toy",
        domain="other",
        description="Toy task: reward +1 when the completion contains an 'e'.",
        to_example=lambda row, fallback_id: row,
        prompt=lambda example: example["question"],
        extractor=lambda output, example=None: output,
        reference=lambda example: f"The answer is {example['answer']}.",
        is_correct=lambda answer, example: "e" in (answer or ""),
        loader=lambda split, data_dir=None: TaskData(toy_examples(split), 0, "toy"),
        splits=("train", "validation"),
        max_new_tokens=max_new_tokens,
    )


def toy_config(out_dir, **overrides):
    from t2cli.train import TrainConfig

    values = dict(
        task="toy",
        model="tiny",
        iters=3,
        batch_size=4,
        eval_every=2,
        val_limit=4,
        max_new_tokens=6,
        checkpoint_every=1,
        micro_batch_size=2,
        lr=0.05,
        grad_clip=1.0,
        out_dir=str(out_dir),
        name="toy",
    )
    return TrainConfig(**(values | overrides))


def main(out_dir: str) -> None:
    """Train on the tiny Llama; rank 0 saves the final z and the metrics to OUT_DIR/result.pt."""
    import torch

    from t2cli.registry import Registry
    from t2cli.train import train

    loaded = tiny_llama(make_tokenizer(), seed=0)
    out = Path(out_dir)
    result = train(
        toy_config(out / "run", iters=4), loaded=loaded, task=toy_task(), registry=Registry(write_root=out / "registry")
    )
    if result.expert is not None:
        torch.save({"final_state": result.final_state, "metrics": result.metrics}, out / "result.pt")


if __name__ == "__main__":
    main(sys.argv[1])
