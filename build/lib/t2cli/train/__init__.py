"""Training SVF experts: RL (the paper's REINFORCE + KL) and SFT objectives, one shared loop.

>>> from t2cli.train import TrainConfig, train
>>> result = train(TrainConfig(task="arc-easy", iters=50))  # doctest: +SKIP

`config.py` holds every option; `rl.py` the loop; `sft.py` the SFT objective and the shared
log-probability code; `checkpoint.py` what a run writes (checkpoint, metrics, learning curve).
The loop (and torch with it) is imported on first use, so reading the options stays cheap.
"""

from t2cli.train.config import OBJECTIVES, TrainConfig, TrainError

__all__ = ["OBJECTIVES", "TrainConfig", "TrainError", "TrainResult", "train"]


def __getattr__(name: str):
    if name in ("TrainResult", "train"):
        from t2cli.train import rl

        return getattr(rl, name)
    raise AttributeError(f"module 't2cli.train' has no attribute {name!r}")
