"""Training SVF experts: RL (the paper's REINFORCE + KL) and SFT objectives, one shared loop.

>>> from t2cli.train import TrainConfig, train
>>> result = train(TrainConfig(task="arc-easy", iters=50))  # doctest: +SKIP

`config.py` holds every option; `rl.py` the loop; `sft.py` the SFT objective and the shared
log-probability code; `checkpoint.py` what a run writes (checkpoint, metrics, learning curve).
"""

from t2cli.train.config import OBJECTIVES, TrainConfig, TrainError
from t2cli.train.rl import TrainResult, train

__all__ = ["OBJECTIVES", "TrainConfig", "TrainError", "TrainResult", "train"]
