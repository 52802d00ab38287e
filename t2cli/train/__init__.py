"""Training: SVF experts and the LoRA baseline, RL and SFT objectives, one loop.

>>> from t2cli.train import TrainConfig, train
>>> result = train(TrainConfig(task="arc-easy", iters=50))  # doctest: +SKIP

`config.py` holds every option and default; `loop.py` the one loop, in named phases (`open_run`,
`train_step`, `validate_and_keep`, …; the benchmarks step a run with them too); `method.py` what a
method is (`svf.py`, `lora.py`); `objective.py` what an objective is (`rl.py`, `sft.py`);
`schedule.py` the batches and learning rate of each iteration; `distributed.py` the process-group helpers;
`activations.py` activation checkpointing; `checkpoint.py` what a run writes (checkpoint, metrics,
learning curve). The loop (and torch with it) is imported on first use, so reading the options
stays cheap.
"""

from t2cli.train.config import METHODS, OBJECTIVES, TrainConfig, TrainError

__all__ = ["METHODS", "OBJECTIVES", "TrainConfig", "TrainError", "TrainResult", "save_best_so_far", "train"]


def __getattr__(name: str):
    if name in ("TrainResult", "save_best_so_far", "train"):
        from t2cli.train import loop

        return getattr(loop, name)
    raise AttributeError(f"module 't2cli.train' has no attribute {name!r}")
