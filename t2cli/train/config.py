"""`TrainConfig`: every knob of an SVF training run, with help text and validation.

Defaults follow the paper where it states a value (lr 2e-3 with cosine decay, gradient-norm clip
1e-3, λ = 0, greedy rollouts, p₀ = 0.1 + N(0, 0.01)) and are CPU-sized where the paper's value
assumes GPUs (batch 256 → 16, validation on at most 32 examples). Every default is defined here once,
the per-method ones (lr, clip) in METHOD_DEFAULTS and the names of the expert and the run directory in
`expert_name` / `run_dir`; the CLI only reads them. The whole config is stored in the checkpoint
(resume checks it) and in the expert's provenance (so every expert says how it was made).
"""

from __future__ import annotations

import math
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path

from t2cli.defaults import DEFAULT_MODEL
from t2cli.errors import T2Error
from t2cli.placement import MODEL_DTYPES as DTYPES  # the --dtype choices, read from here by the CLI
from t2cli.placement import unknown_dtype

OBJECTIVES = ("rl", "sft", "sft+rl")
METHODS = ("svf", "lora")
# Per-method defaults of --objective, --lr and --grad-clip. SVF: the paper's (one scale per singular value). LoRA:
# 2e-4, the common rate for rank 16 (the PEFT/QLoRA examples; the paper does not state its LoRA rate),
# and a clip of 1.0 (the Hugging Face Trainer's max_grad_norm).
# The objective: RL for SVF (the paper), SFT for LoRA (the paper's LoRA recipe).
METHOD_DEFAULTS = {
    "svf": {"objective": "rl", "lr": 2e-3, "grad_clip": 1e-3},
    "lora": {"objective": "sft", "lr": 2e-4, "grad_clip": 1.0},
}

# Fields that may change between a run and its `--resume` without changing the trajectory of p
# (patience decides only where the run stops, never what it does before).
RESUMABLE_CHANGES = frozenset(
    {
        "name",
        "patience",
        "out_dir",
        "checkpoint_every",
        "checkpoint_minutes",
        "device",
        "overwrite",
        "command",
        "grad_checkpointing",
    }
)


class TrainError(T2Error):
    """A training run cannot start or resume (bad config, clashing names, missing checkpoint)."""


def _help(text: str, **kwargs):
    """A dataclass field carrying its help text (`TrainConfig.help(name)` reads it back)."""
    return field(metadata={"help": text}, **kwargs)


@dataclass
class TrainConfig:
    # -- what to train
    task: str = _help("Task to train on (t2cli.tasks.TASKS); its train/validation splits are used.")
    method: str = _help(
        "svf: an SVF expert vector z (the paper's method), registered as an expert. lora: the paper's LoRA "
        "baseline (rank 16, alpha 32, dropout 0.05, objective sft) on the same targets, data and budget, "
        "saved as a PEFT adapter in <run dir>/adapter.",
        default="svf",
    )
    model: str = _help("Embedded model name, local HF directory or Hub id.", default=DEFAULT_MODEL)
    objective: str | None = _help(
        "rl: REINFORCE on the task reward (the paper). sft: next-token loss on the task's reference "
        "answers. sft+rl: SFT for the first --sft-iters iterations, then RL. Default rl for svf, sft for lora.",
        default=None,
    )
    targets: list[str] = _help(
        "Matrices to adapt: mlp (paper default), attn, all, or regexes.", default_factory=lambda: ["mlp"]
    )
    # -- the RL objective
    kl: float = _help(
        "λ of the KL(π_z ‖ π_base) penalty, summed over generated tokens (paper: 0–0.3; 0 skips "
        "the extra base-model forward).",
        default=0.0,
    )
    batch_size: int = _help("Prompts per iteration, over all processes (paper 256; 16 is a CPU size).", default=16)
    rollouts_per_prompt: int = _help(
        "k answers per prompt. 1 = one greedy answer, raw ±1 reward (the paper). k > 1 = k sampled answers "
        "with a group-mean baseline.",
        default=1,
    )
    temperature: float = _help("Sampling temperature of the rollouts when k > 1.", default=1.0)
    init_expert: str | None = _help(
        "Start from this registered expert's z instead of the uniform p₀ (same base model and targets), "
        "e.g. RL after an SFT run. It is validated before iteration 1 and kept if it beats the base model.",
        default=None,
    )
    sft_iters: int | None = _help("With sft+rl: how many first iterations use SFT (default iters // 2).", default=None)
    # -- optimisation
    iters: int = _help("Optimiser steps.", default=100)
    lr: float | None = _help("Peak AdamW rate, cosine decay to lr · min_lr_ratio (svf 2e-3, lora 2e-4).", default=None)
    warmup_iters: int = _help("Linear warm-up iterations before the cosine decay (paper: none).", default=0)
    min_lr_ratio: float = _help("Final learning rate as a fraction of --lr.", default=0.0)
    weight_decay: float = _help(
        "AdamW decoupled weight decay on p. 0 by default: decay pulls p toward 0 (z toward max_multiplier/2), "
        "a prior the paper does not state.",
        default=0.0,
    )
    grad_clip: float | None = _help("Clip the gradient norm to this, 0 = off (svf 1e-3, lora 1.0).", default=None)
    max_multiplier: float = _help("z = max_multiplier · sigmoid(p).", default=1.0)
    init_mean: float = _help("p starts at init_mean + N(0, init_std²) (paper 0.1).", default=0.1)
    init_std: float = _help("Noise of the initial p (paper 0.01).", default=0.01)
    micro_batch_size: int = _help("Samples per forward/backward; gradients accumulate (memory ∝ this).", default=8)
    grad_checkpointing: bool = _help("Recompute each layer's activations in the backward (less memory).", default=False)
    dtype: str = _help(
        "Model weights' dtype: auto (bfloat16 on a GPU that supports it, float32 otherwise), float32, "
        "bfloat16, float16. The trained parameters, the optimiser and the loss stay float32.",
        default="auto",
    )
    # -- generation
    max_new_tokens: int | None = _help(
        "Rollout/validation answer length (default: the task's own limit).", default=None
    )
    max_prompt_tokens: int = _help("Longer prompts keep only their last N tokens.", default=1024)
    generation_batch_size: int = _help("Prompts per generation batch (rollouts and validation).", default=32)
    # -- validation, early stopping
    eval_every: int = _help("Validate every N iterations (and after the last).", default=10)
    val_limit: int | None = _help("Validate on at most N validation examples (CPU budget; None = all).", default=32)
    train_limit: int | None = _help("Use only the first N training examples (None = all).", default=None)
    max_reference_tokens: int | None = _help(
        "Train only on examples whose reference answer is at most N tokens long (the easiest problems; "
        "applied after --train-limit).",
        default=None,
    )
    patience: int = _help(
        "Stop after N validations in a row without a new best, counted over the whole run "
        "(0 = never stop early; may change on --resume).",
        default=0,
    )
    # -- bookkeeping
    seed: int = _help("Seed of p's initial noise, the data order and sampling.", default=0)
    name: str | None = _help("Expert name in the registry (default <task>-<objective>).", default=None)
    checkpoint_every: int = _help("Write a checkpoint every N iterations (0 = only at the end).", default=10)
    checkpoint_minutes: float = _help(
        "Also checkpoint when N minutes passed since the last one (0 = off).", default=10.0
    )
    out_dir: str | None = _help("Run directory: checkpoint, metrics.jsonl (default runs/train-<name>).", default=None)
    data_dir: str | None = _help("Directory laid out like the bundled data.", default=None)
    device: str | None = _help(
        "cpu, cuda, cuda:1 … (default: CUDA if present; cuda:LOCAL_RANK when distributed).", default=None
    )
    overwrite: bool = _help("Replace a registered expert (or a saved adapter) of the same name.", default=False)
    command: str | None = _help("The command line that started the run (recorded in the provenance).", default=None)

    def __post_init__(self) -> None:
        self.targets = list(self.targets)
        problems = []
        if self.method in METHOD_DEFAULTS:  # the per-method defaults, resolved once here
            for key, value in METHOD_DEFAULTS[self.method].items():
                if getattr(self, key) is None:
                    setattr(self, key, value)

        def need(ok: bool, message: str) -> None:
            if not ok:
                problems.append(message)

        need(bool(self.task), "task must be given")
        need(self.method in METHODS, f"method must be one of {', '.join(METHODS)}, not {self.method!r}")
        need(self.dtype in DTYPES, unknown_dtype("dtype", self.dtype, DTYPES))
        need(self.objective in OBJECTIVES, f"objective must be one of {', '.join(OBJECTIVES)}, not {self.objective!r}")
        need(bool(self.targets), "targets must not be empty (e.g. mlp)")
        need(math.isfinite(self.kl) and self.kl >= 0, "kl must be ≥ 0")
        need(self.batch_size >= 1, "batch_size must be ≥ 1")
        need(self.rollouts_per_prompt >= 1, "rollouts_per_prompt must be ≥ 1")
        need(self.temperature > 0, "temperature must be > 0")
        need(self.iters >= 1, "iters must be ≥ 1")
        need(self.lr is not None and math.isfinite(self.lr) and self.lr > 0, "lr must be > 0")
        need(0 <= self.warmup_iters < self.iters or self.warmup_iters == 0, "warmup_iters must be < iters")
        need(0 <= self.min_lr_ratio <= 1, "min_lr_ratio must be in [0, 1]")
        need(self.weight_decay >= 0, "weight_decay must be ≥ 0")
        need(self.grad_clip is not None and self.grad_clip >= 0, "grad_clip must be ≥ 0 (0 = no clipping)")
        need(self.max_multiplier > 0, "max_multiplier must be > 0")
        need(self.init_std >= 0, "init_std must be ≥ 0")
        need(self.micro_batch_size >= 1, "micro_batch_size must be ≥ 1")
        need(self.max_new_tokens is None or self.max_new_tokens >= 1, "max_new_tokens must be ≥ 1")
        need(self.max_prompt_tokens >= 8, "max_prompt_tokens must be ≥ 8")
        need(self.generation_batch_size >= 1, "generation_batch_size must be ≥ 1")
        need(self.eval_every >= 1, "eval_every must be ≥ 1")
        need(self.val_limit is None or self.val_limit >= 1, "val_limit must be ≥ 1 (or None for all)")
        need(self.train_limit is None or self.train_limit >= 1, "train_limit must be ≥ 1 (or None for all)")
        need(
            self.max_reference_tokens is None or self.max_reference_tokens >= 1,
            "max_reference_tokens must be ≥ 1 (or None for no limit)",
        )
        need(self.init_expert is None or bool(self.init_expert), "init_expert must be an expert name")
        need(self.patience >= 0, "patience must be ≥ 0")
        need(self.checkpoint_every >= 0, "checkpoint_every must be ≥ 0")
        need(
            math.isfinite(self.checkpoint_minutes) and self.checkpoint_minutes >= 0,
            "checkpoint_minutes must be ≥ 0 (0 = off)",
        )
        if self.objective == "sft+rl":
            if self.sft_iters is None:
                self.sft_iters = self.iters // 2
            need(0 < self.sft_iters < self.iters, "sft_iters must be between 1 and iters − 1 for sft+rl")
        else:
            need(self.sft_iters is None, "sft_iters only applies to the sft+rl objective")
        if self.name is not None:
            try:
                from t2cli.registry import check_name  # (imports torch: kept out of `t2 --help`)

                check_name(self.name)
            except T2Error as error:
                problems.append(str(error))
        if problems:
            raise TrainError("invalid training config: " + "; ".join(problems))

    # ------------------------------------------------------------------ derived values

    @property
    def expert_name(self) -> str:
        """The name of what the run saves: --name, else <task>-<objective> (svf) or <task>-lora."""
        if self.name:
            return self.name
        return f"{self.task}-lora" if self.method == "lora" else f"{self.task}-{self.objective.replace('+', '-')}"

    @property
    def run_dir(self) -> Path:
        return Path(self.out_dir) if self.out_dir else Path("runs") / f"train-{self.expert_name}"

    def objective_at(self, iteration: int) -> str:
        """ "rl" or "sft" for the 0-based iteration (sft+rl switches after sft_iters)."""
        if self.objective == "sft+rl":
            return "sft" if iteration < (self.sft_iters or 0) else "rl"
        return self.objective

    # ------------------------------------------------------------------ (de)serialisation

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    @classmethod
    def help(cls, name: str) -> str:
        return next(f.metadata["help"] for f in fields(cls) if f.name == name)

    @classmethod
    def default(cls, name: str):
        """A field's default (None for one resolved per method, like lr)."""
        found = next(f for f in fields(cls) if f.name == name)
        return found.default_factory() if found.default_factory is not MISSING else found.default

    def resume_mismatches(self, saved: dict) -> list[str]:
        """Fields whose value differs from the checkpoint's and would change the run."""
        mine = self.to_dict()
        # A field added after the checkpoint was written counts as its default there.
        defaults = {f.name: f.default for f in fields(self) if f.default is not MISSING}
        defaults |= METHOD_DEFAULTS.get(saved.get("method", "svf"), {})
        return [
            f"{key}: checkpoint {saved.get(key, defaults.get(key))!r}, now {mine[key]!r}"
            for key in mine
            if key not in RESUMABLE_CHANGES and saved.get(key, defaults.get(key)) != mine[key]
        ]
