"""The SFT objective, and the log-probability machinery both objectives share.

SFT: next-token cross-entropy of the task's reference answer given the chat prompt, through the
factorised model with the current z; only answer tokens count. The paper's ablation compares
this with RL. For a small model it is the denser signal: every answer token says what to do,
where an RL reward of −1 on every rollout says almost nothing.

Shared with RL (`rl.py` imports from here): a `Sample` (prompt ids, completion ids, advantage) and
`completion_logits`, one forward over prompt+completion that returns the logits predicting each
completion token, and only those (the LM head over the prompt would be wasted work and memory:
a 49k vocabulary × 200 prompt tokens × 8 rows is 300 MB of float32 logits).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import torch

from t2cli.adapt import FactorisedModel
from t2cli.generation import chat_prompt
from t2cli.models import LoadedModel
from t2cli.tasks.base import Task


@dataclass(frozen=True)
class Sample:
    """One training sequence: prompt tokens, answer tokens, and how the loss weighs it."""

    prompt_ids: list[int]
    completion_ids: list[int]
    advantage: float = 0.0  # RL: reward − baseline; unused by SFT
    reward: float | None = None  # RL: the task's reward of this completion


def prompt_text(tokenizer, task: Task, example: dict, max_prompt_tokens: int) -> str:
    """The templated chat prompt; an over-long prompt keeps its last `max_prompt_tokens` tokens.

    The end of a prompt (the question's tail and the opened assistant turn) is what the answer
    depends on most; a chat template's default system text at the start is the first to go.
    """
    text = chat_prompt(tokenizer, task.messages(example))
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    if len(ids) <= max_prompt_tokens:
        return text
    return tokenizer.decode(ids[-max_prompt_tokens:])


def completion_logits(model: torch.nn.Module, samples: Sequence[Sample]) -> tuple[torch.Tensor, ...]:
    """Logits (B, C, V) predicting each completion token, the targets (B, C) and their mask (B, C).

    Layout: prompts left-padded to P, completions right-padded to C, so every completion starts at
    column P and `logits_to_keep=C` returns exactly the positions that predict them:
        [pad pad p0 p1 p2 | c0 c1 pad]      position P−1+j predicts c_j
    Position ids count real tokens only (as `generate` does with left padding), which matters for
    absolute position embeddings (GPT-2); the last column predicts nothing and is not fed.
    """
    device = next(model.parameters()).device
    P = max(len(s.prompt_ids) for s in samples)
    C = max(len(s.completion_ids) for s in samples)
    ids = torch.zeros(len(samples), P + C, dtype=torch.long)
    attention = torch.zeros(len(samples), P + C, dtype=torch.long)
    for row, sample in enumerate(samples):
        prompt, completion = sample.prompt_ids, sample.completion_ids
        ids[row, P - len(prompt) : P] = torch.tensor(prompt)
        ids[row, P : P + len(completion)] = torch.tensor(completion, dtype=torch.long)
        attention[row, P - len(prompt) : P + len(completion)] = 1
    ids, attention = ids.to(device), attention.to(device)
    positions = (attention.cumsum(-1) - 1).clamp(min=0)
    out = model(
        input_ids=ids[:, :-1],
        attention_mask=attention[:, :-1],
        position_ids=positions[:, :-1],
        logits_to_keep=C,
        use_cache=False,
    )
    logits = out.logits.float()  # (B, C, V): float32 log-softmax even for a bf16 model
    return logits, ids[:, P:], attention[:, P:].float()


def token_logprobs(logits: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """log π(y_t) of the targets (B, C) and the full log-distributions (B, C, V)."""
    logp = torch.log_softmax(logits, dim=-1)
    return logp.gather(-1, targets.unsqueeze(-1)).squeeze(-1), logp


# --------------------------------------------------------------------------- the SFT objective


def reference_samples(
    loaded: LoadedModel, task: Task, examples: Sequence[dict], max_prompt_tokens: int, max_answer_tokens: int
) -> list[Sample]:
    """Prompt + reference answer (+ eos, so the model also learns where to stop)."""
    tokenizer = loaded.tokenizer
    samples = []
    for example in examples:
        prompt = prompt_text(tokenizer, task, example, max_prompt_tokens)
        prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        answer_ids = tokenizer(task.reference_output(example), add_special_tokens=False)["input_ids"]
        answer_ids = answer_ids[:max_answer_tokens]
        if tokenizer.eos_token_id is not None:
            answer_ids = answer_ids + [tokenizer.eos_token_id]
        samples.append(Sample(prompt_ids, answer_ids))
    return samples


def nll_loss(
    model: torch.nn.Module, samples: Sequence[Sample], adapted: FactorisedModel, z: Mapping[str, torch.Tensor]
) -> tuple[torch.Tensor, dict[str, float]]:
    """Σ over samples of the mean cross-entropy of each answer's tokens (the loop divides by the
    global batch size, so the step's loss is a mean over samples of per-token means)."""
    adapted.set_z(z)
    logits, targets, mask = completion_logits(model, samples)
    logp_tokens, _ = token_logprobs(logits, targets)  # (B, C)
    nll = -(logp_tokens * mask).sum(-1) / mask.sum(-1).clamp(min=1)  # (B,)
    return nll.sum(), {"tokens": float(mask.sum())}


def make_sft_objective(loaded: LoadedModel, task: Task, max_prompt_tokens: int, max_answer_tokens: int):
    """(samples, loss) functions of the SFT objective, in the shape the training loop takes."""

    def samples(examples: Sequence[dict], z: Mapping[str, torch.Tensor], iteration: int) -> list[Sample]:
        return reference_samples(loaded, task, examples, max_prompt_tokens, max_answer_tokens)

    loss: Callable = nll_loss
    return samples, loss
