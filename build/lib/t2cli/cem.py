"""Few-shot adaptation (SPEC §3c): the cross-entropy method searches mixing weights α over the
domain experts, z' = Σ αₖ zₖ, on k labelled shots of the target task.

Fitness of a candidate α = (accuracy of greedy answers on the shots, mean per-token log-likelihood of
their reference answers), compared in that order — the log-likelihood breaks the many accuracy ties
of a handful of shots. Global α (one per expert) or per-matrix α; seeded, so the same inputs give
the same α. `split_shots` takes the shots out of an evaluation set so they are never scored.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from t2cli.dispatch import DispatchError, ExpertSwitch
from t2cli.expert import ExpertVector, mix
from t2cli.generation import GenerationConfig, chat_prompt, generate
from t2cli.models import LoadedModel
from t2cli.tasks.base import Task
from t2cli.tasks.cls import OTHER


def split_shots(examples: Sequence[dict], k: int, seed: int = 0) -> tuple[list[dict], list[dict]]:
    """(k shots, the remaining examples in their original order): the shots never get evaluated.

    The shots are a seeded random sample of positions, so the same (examples, k, seed) always
    gives the same split.
    """
    if not 0 < k < len(examples):
        raise DispatchError(f"cannot take {k} shots from {len(examples)} examples: need 0 < k < {len(examples)}")
    picked = set(random.Random(seed).sample(range(len(examples)), k))
    shots = [examples[i] for i in sorted(picked)]
    rest = [example for i, example in enumerate(examples) if i not in picked]
    return shots, rest


@dataclass(frozen=True)
class CEMConfig:
    population: int = 32  # candidate α per generation
    elite_ratio: float = 0.2  # fraction of the population that moves the distribution
    generations: int = 50  # upper bound
    init_std: float = 0.5  # initial std of α (initial mean 1/K)
    min_std: float = 0.0  # floor on the std (0: the paper's plain CEM)
    patience: int | None = None  # stop after this many generations without a better best
    stop_at_perfect: bool = True  # stop once the best member solves every shot
    per_matrix: bool = False  # one α per expert per matrix instead of one per expert
    seed: int = 0
    max_new_tokens: int | None = None  # pass-2 budget on the shots (default: the task's)
    batch_size: int = 16

    def __post_init__(self) -> None:
        if self.population < 2 or self.generations < 1:
            raise ValueError("CEM needs a population ≥ 2 and ≥ 1 generation")
        if not 0 < self.elite_ratio <= 1:
            raise ValueError("elite_ratio must be in (0, 1]")


@dataclass
class CEMResult:
    expert: ExpertVector  # the mixture; register it to reuse it for the task
    alphas: torch.Tensor  # (K,) or (K, M): the best α
    accuracy: float  # on the shots
    loglik: float  # mean per-token log-likelihood of the shots' reference answers
    experts: list[str]
    modules: list[str]
    history: list[dict]  # per generation: best/mean fitness, mean α
    evaluations: int

    @property
    def weights(self) -> dict[str, float]:
        """Global α per expert (the mean over matrices when per-matrix)."""
        alphas = self.alphas if self.alphas.ndim == 1 else self.alphas.mean(dim=1)
        return {name: round(float(a), 6) for name, a in zip(self.experts, alphas)}


CEMProgress = Callable[[int, int, float], None]  # (generation, generations, best accuracy)


def mixture(experts: Sequence[ExpertVector], alphas: torch.Tensor, modules: Sequence[str], name: str) -> ExpertVector:
    """z' = Σ αₖ zₖ for α of shape (K,) or (K, M); an all-zero α counts as uniform (W' ignores scale)."""
    if float(alphas.sum()) <= 0:
        alphas = torch.ones_like(alphas)
    if alphas.ndim == 1:
        return mix(experts, [float(a) for a in alphas], name)
    per_layer = {e.name: {m: float(alphas[k, j]) for j, m in enumerate(modules)} for k, e in enumerate(experts)}
    for j, m in enumerate(modules):  # a matrix whose α are all zero: uniform, like the global case
        if float(alphas[:, j].sum()) <= 0:
            for e in experts:
                per_layer[e.name][m] = 1.0
    return mix(experts, [1.0] * len(experts), name, per_layer=per_layer)


def shot_fitness(
    loaded: LoadedModel, task: Task, shots: Sequence[dict], config: GenerationConfig
) -> tuple[float, float]:
    """(accuracy of greedy answers, mean per-token log-likelihood of the reference answers)."""
    prompts = [chat_prompt(loaded.tokenizer, task.messages(example)) for example in shots]
    outputs = [c.text for c in generate(loaded, prompts, config)]
    accuracy = sum(task.check_many(outputs, shots)) / len(shots)
    return accuracy, reference_loglik(loaded, prompts, [task.reference_output(e) for e in shots])


@torch.no_grad()
def reference_loglik(loaded: LoadedModel, prompts: Sequence[str], answers: Sequence[str]) -> float:
    """Mean over prompts of the mean per-token log-probability of each answer after its prompt."""
    tokenizer, model, device = loaded.tokenizer, loaded.model, loaded.device
    total = 0.0
    for prompt, answer in zip(prompts, answers):
        prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        answer_ids = tokenizer(answer, add_special_tokens=False)["input_ids"] or [tokenizer.eos_token_id]
        ids = torch.tensor([prompt_ids + answer_ids], device=device)
        logits = model(input_ids=ids, logits_to_keep=len(answer_ids) + 1).logits[0, :-1].float()
        logp = torch.log_softmax(logits, dim=-1)
        total += float(logp[torch.arange(len(answer_ids)), torch.tensor(answer_ids, device=device)].mean())
    return total / len(prompts)


def cem_search(
    loaded: LoadedModel,
    switch: ExpertSwitch,
    experts: Sequence[ExpertVector],
    task: Task,
    shots: Sequence[dict],
    config: CEMConfig = CEMConfig(),
    name: str | None = None,
    progress: CEMProgress | None = None,
) -> CEMResult:
    """Cross-entropy-method search of α for z' = Σ αₖ zₖ on labelled shots (SPEC §3c).

    Each generation samples α ~ N(mean, std) clamped to [0, 1] (the first member is always the
    best α so far, re-evaluated); fitness is (accuracy, reference log-likelihood), compared in
    that order; the elite fraction sets the next mean and std. Seeded: the same inputs and seed
    give the same α. The model is left with its base weights.
    """
    if not experts:
        raise DispatchError("CEM needs at least one domain expert in the registry")
    if not shots:
        raise DispatchError("CEM needs labelled shots (a few examples of the task)")
    modules = sorted(experts[0].z)
    K, M = len(experts), len(modules)
    shape = (K, M) if config.per_matrix else (K,)
    generator = torch.Generator().manual_seed(config.seed)
    mean = torch.full(shape, 1.0 / K)
    std = torch.full(shape, config.init_std)
    n_elite = max(1, round(config.elite_ratio * config.population))
    generation_config = GenerationConfig(
        max_new_tokens=config.max_new_tokens or task.max_new_tokens,
        batch_size=config.batch_size,
        stop=tuple(task.stop),
    )
    best: tuple[tuple[float, float], torch.Tensor] | None = None
    history: list[dict] = []
    evaluations, stale = 0, 0
    try:
        for generation in range(config.generations):
            population = (mean + std * torch.randn((config.population, *shape), generator=generator)).clamp(0, 1)
            if best is not None:
                population[0] = best[1]  # the best so far is always re-evaluated
            fitness = []
            for member, alphas in enumerate(population):
                vector = mixture(experts, alphas, modules, f"cem-{generation}-{member}")
                switch.adapter.load_weights(switch.adapter.compose(vector), f"cem:{generation}:{member}")
                fitness.append(shot_fitness(loaded, task, shots, generation_config))
                evaluations += 1
            order = sorted(range(len(population)), key=lambda i: fitness[i], reverse=True)
            improved = best is None or fitness[order[0]] > best[0]
            if improved:
                best = (fitness[order[0]], population[order[0]].clone())
            stale = 0 if improved else stale + 1
            elites = population[order[:n_elite]]
            mean = elites.mean(dim=0)
            std = elites.std(dim=0, unbiased=False).clamp(min=config.min_std)
            history.append(
                {
                    "generation": generation,
                    "best_accuracy": best[0][0],
                    "best_loglik": round(best[0][1], 6),
                    "mean_accuracy": sum(f[0] for f in fitness) / len(fitness),
                    "mean_alpha": [round(float(a), 4) for a in (mean if mean.ndim == 1 else mean.mean(dim=1))],
                }
            )
            if progress:
                progress(generation + 1, config.generations, best[0][0])
            if config.stop_at_perfect and best[0][0] >= 1.0:
                break
            if config.patience is not None and stale >= config.patience:
                break
    finally:
        switch.adapter.revert()
    assert best is not None
    (accuracy, loglik), alphas = best
    expert_names = [e.name for e in experts]
    result_name = name or f"cem-{task.name}"
    vector = mixture(experts, alphas, modules, result_name)
    vector.domain = task.domain if task.domain in ("math", "code", "reasoning") else OTHER
    vector.provenance |= {
        "objective": "cem",
        "task": task.name,
        "cem": {
            "shots": [str(example.get("id", i)) for i, example in enumerate(shots)],
            "accuracy": accuracy,
            "loglik": loglik,
            "generations": len(history),
            "evaluations": evaluations,
            "per_matrix": config.per_matrix,
            "seed": config.seed,
            "population": config.population,
            "elite_ratio": config.elite_ratio,
        },
    }
    return CEMResult(vector, alphas, accuracy, loglik, expert_names, modules, history, evaluations)
