"""Few-shot adaptation: the cross-entropy method searches mixing weights α over the domain
experts, z' = Σ αₖ zₖ, on k labelled shots of the target task (the cem strategy's set-up).

Fitness of a candidate α (`CEMConfig.fitness`, every candidate scored on the same shots):
  loglik           the mean per-token log-likelihood of the shots' reference answers: one
                   teacher-forced forward per shot, batched, no generation — far cheaper per
                   candidate, and continuous, so candidates do not tie (the default, chosen on
                   ARC-Challenge dev: bench/cem.py)
  accuracy+loglik  accuracy of greedy answers on the shots, ties broken by the log-likelihood
                   (the paper's; a handful of shots gives many ties)
  accuracy         the accuracy alone (ties go to the earlier candidate: the best so far first)
Global α (one per expert) or per-matrix α; seeded, so the same inputs give the same α.
`split_shots` takes the shots out of an evaluation set so they are never scored.

A search with a `checkpoint` file writes its state there after every generation (the
distribution, the random generator, the best member, the history) and, started again on the same
model, experts, shots and settings, goes on from it: the result is the unbroken search's, bit for
bit. A finished search's file holds its result, so a cut-off evaluation does not search again.
The generation budget alone may differ: a search continued with a larger one goes on from where it
stopped (as the unbroken search with that budget would), one with fewer generations than it has
already run is refused.
"""

from __future__ import annotations

import base64
import hashlib
import json
import random
import time
from collections.abc import Callable, Mapping, MutableMapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path

import torch

from t2cli.adapt import ExpertSwitch
from t2cli.defaults import CLASSIFICATION, OTHER
from t2cli.embedded import answer_budget
from t2cli.errors import DispatchError
from t2cli.expert import ExpertVector, mix
from t2cli.files import atomic_write_text
from t2cli.generation import GenerationConfig, chat_prompt, generate
from t2cli.models import LoadedModel
from t2cli.tasks.base import Task

DEFAULT_SHOTS = 32  # cem shots when none are named: as many as the split allows, up to this


def default_shot_count(available: int) -> int:
    """The number of shots cem takes from a split of `available` examples when none is named:
    DEFAULT_SHOTS, or half the split when it is smaller (the rest stays to be evaluated).

    >>> default_shot_count(1119), default_shot_count(40), default_shot_count(1)
    (32, 20, 0)
    """
    return min(DEFAULT_SHOTS, available // 2)


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


FITNESSES = ("accuracy+loglik", "accuracy", "loglik")


@dataclass(frozen=True)
class CEMConfig:
    population: int = 32  # candidate α per generation
    elite_ratio: float = 0.2  # fraction of the population that moves the distribution
    generations: int = 50  # upper bound
    init_std: float = 0.5  # initial std of α (initial mean 1/K)
    min_std: float = 0.0  # floor on the std (0: the paper's plain CEM)
    patience: int | None = None  # stop after this many generations without a better best
    tolerance: float = 0.0  # stop once the elites' mixtures agree to within this (`mixture_spread`; 0: never)
    stop_at_perfect: bool = True  # stop once the best member solves every shot
    per_matrix: bool = False  # one α per expert per matrix instead of one per expert
    seed: int = 0
    max_new_tokens: int | None = None  # pass-2 budget on the shots (default: the task's)
    batch_size: int = 16  # shots per generation batch and per log-likelihood forward
    fitness: str = "loglik"  # one of FITNESSES

    def __post_init__(self) -> None:
        if self.fitness not in FITNESSES:
            raise DispatchError(f"unknown CEM fitness {self.fitness!r}: choose one of {', '.join(FITNESSES)}")
        if self.population < 2 or self.generations < 1:
            raise ValueError("CEM needs a population ≥ 2 and ≥ 1 generation")
        if self.tolerance < 0:
            raise DispatchError(
                f"CEM tolerance {self.tolerance} is negative: give 0 (every generation) or a spread of α"
            )
        if not 0 < self.elite_ratio <= 1:
            raise ValueError("elite_ratio must be in (0, 1]")


@dataclass
class CEMResult:
    expert: ExpertVector  # the mixture; register it to reuse it for the task
    alphas: torch.Tensor  # (K,) or (K, M): the best α
    accuracy: float | None  # on the shots (None with fitness "loglik": nothing was generated)
    loglik: float | None  # mean per-token log-likelihood of the shots' reference answers (None: "accuracy")
    experts: list[str]
    modules: list[str]
    history: list[dict]  # per generation: best/mean fitness, mean α
    evaluations: int  # candidates scored
    reused: int = 0  # of which scores came from the caller's memo (`cem_search(scores=...)`)
    seconds: float = 0.0  # wall time of its generations, over every run that continued the search

    @property
    def weights(self) -> dict[str, float]:
        """Global α per expert (the mean over matrices when per-matrix)."""
        alphas = self.alphas if self.alphas.ndim == 1 else self.alphas.mean(dim=1)
        return {name: round(float(a), 6) for name, a in zip(self.experts, alphas)}


CEMProgress = Callable[[int, int, float], None]  # (generation, generations, best score: see `Fitness.score`)


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


@dataclass(frozen=True)
class Fitness:
    """One candidate's score; candidates compare by `key` (larger is better)."""

    key: tuple[float, ...]
    accuracy: float | None = None
    loglik: float | None = None

    @property
    def score(self) -> float:
        """The leading component: shot accuracy, or the log-likelihood for fitness "loglik"."""
        return self.key[0]


def shot_fitness(
    loaded: LoadedModel,
    task: Task,
    shots: Sequence[dict],
    config: GenerationConfig,
    fitness: str = "accuracy+loglik",
    known: Mapping[str, float] | None = None,
) -> Fitness:
    """Score the model as it stands on the shots: greedy answers are generated only when the
    fitness uses accuracy, reference log-likelihoods computed only when it uses them, and
    neither when `known` (scores of these weights on these shots) already holds it."""
    scores = dict(known or {})
    prompts = [chat_prompt(loaded.tokenizer, task.messages(example)) for example in shots]
    if fitness != "loglik" and "accuracy" not in scores:
        outputs = [c.text for c in generate(loaded, prompts, config)]
        scores["accuracy"] = sum(task.check_many(outputs, shots)) / len(shots)
    if fitness != "accuracy" and "loglik" not in scores:
        answers = [task.reference_output(example) for example in shots]
        scores["loglik"] = reference_loglik(loaded, prompts, answers, batch_size=config.batch_size)
    return make_fitness(fitness, scores)


def make_fitness(fitness: str, scores: Mapping[str, float]) -> Fitness:
    """The `fitness` of a candidate whose shot scores ("accuracy", "loglik") are `scores`."""
    accuracy, loglik = scores.get("accuracy"), scores.get("loglik")
    key = {"accuracy+loglik": (accuracy, loglik), "accuracy": (accuracy,), "loglik": (loglik,)}[fitness]
    return Fitness(key, accuracy, loglik)


@torch.no_grad()
def reference_loglik(
    loaded: LoadedModel, prompts: Sequence[str], answers: Sequence[str], batch_size: int = 16
) -> float:
    """Mean over prompts of the mean per-token log-probability of each answer after its prompt.

    Teacher-forced, `batch_size` sequences per forward: left-padded with an attention mask and
    positions that skip the padding, so every answer ends at the last position and only the
    last (longest answer + 1) positions are projected onto the vocabulary.
    """
    if len(prompts) != len(answers) or not prompts:
        raise ValueError("reference_loglik needs one answer per prompt and at least one prompt")
    tokenizer, model, device = loaded.tokenizer, loaded.model, loaded.device
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (tokenizer.eos_token_id or 0)
    encoded = []
    for prompt, answer in zip(prompts, answers):
        prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        answer_ids = tokenizer(answer, add_special_tokens=False)["input_ids"] or [tokenizer.eos_token_id]
        encoded.append((prompt_ids + answer_ids, len(answer_ids)))
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i][0]))  # similar lengths, less padding
    total = 0.0
    for start in range(0, len(order), max(1, batch_size)):
        batch = [encoded[i] for i in order[start : start + max(1, batch_size)]]
        width = max(len(ids) for ids, _ in batch)
        keep = max(n for _, n in batch) + 1
        ids = torch.tensor([[pad] * (width - len(seq)) + seq for seq, _ in batch], device=device)
        mask = torch.tensor([[0] * (width - len(seq)) + [1] * len(seq) for seq, _ in batch], device=device)
        positions = (mask.cumsum(dim=1) - 1).clamp(min=0)
        logits = model(input_ids=ids, attention_mask=mask, position_ids=positions, logits_to_keep=keep).logits
        for row, (seq, n) in enumerate(batch):  # one row's answer at a time: float32 over a 150k vocabulary
            # is large for long answers (MATH solutions), so only its n positions are converted
            logp = torch.log_softmax(logits[row, keep - 1 - n : keep - 1].float(), dim=-1)  # j predicts j + 1
            targets = torch.tensor(seq[-n:], device=device)
            total += float(logp.gather(1, targets[:, None]).mean())
        del logits
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
    scores: MutableMapping[bytes, dict[str, float]] | None = None,
    checkpoint: str | Path | None = None,
) -> CEMResult:
    """Cross-entropy-method search of α for z' = Σ αₖ zₖ on labelled shots.

    Each generation samples α ~ N(mean, std) clamped to [0, 1] (the first member is always the
    best α so far, re-evaluated); every member is scored on all the shots by `config.fitness`
    (see the module docstring); the elite fraction sets the next mean and std. It stops after
    `config.generations`, or earlier by `stop_at_perfect`, `patience` or `tolerance`. Seeded: the
    same inputs and seed give the same α. The model is left with its base weights.

    `scores`, when given, memoises shot scores by α (the caller keeps one per set of shots and
    experts): a candidate already scored there — the best so far, re-sampled in every generation,
    or the first generation of another search with the same seed — is not evaluated again.
    `checkpoint`, when given, is the file the search's state is kept in after each generation and
    continued from (see the module docstring); a file of another search there is an error.
    """
    if not experts:
        raise DispatchError("CEM needs at least one domain expert in the registry")
    if not shots:
        raise DispatchError("CEM needs labelled shots (a few examples of the task)")
    population = _Population(loaded, switch, experts, task, shots, config, scores)
    shape = (len(experts), len(population.modules)) if config.per_matrix else (len(experts),)
    state = _SearchState.start(shape, config)
    journal = (
        None
        if checkpoint is None
        else _Checkpoint(Path(checkpoint), search_identity(loaded, experts, task, shots, config))
    )
    if journal is not None and (kept := journal.read()) is not None:
        state = kept
        if len(state.history) > config.generations:
            raise DispatchError(
                f"the CEM search in {journal.path} has run {len(state.history)} generations, more than the "
                f"{config.generations} asked for: ask for {len(state.history)} or more, or delete it to search again"
            )
        state.finished = _stops(config, state.history[-1])  # a larger generation budget goes on
        population.evaluations, population.reused = state.evaluations, state.reused
        if progress and state.history:
            progress(len(state.history), config.generations, state.best[0].score)
    n_elite = _elites(config)
    try:
        while not state.finished:
            started = time.perf_counter()
            generation = len(state.history)
            noise = torch.randn((config.population, *shape), generator=state.generator)
            members = (state.mean + state.std * noise).clamp(0, 1)
            if state.best is not None:
                members[0] = state.best[1]  # the best so far is always re-evaluated
            fitness = population.score(generation, members)
            # stable: among equal keys the earlier member (the best so far, at 0) stays first
            order = sorted(range(len(members)), key=lambda i: fitness[i].key, reverse=True)
            improved = state.best is None or fitness[order[0]].key > state.best[0].key
            if improved:
                state.best = (fitness[order[0]], members[order[0]].clone())
            state.stale = 0 if improved else state.stale + 1
            elites = members[order[:n_elite]]
            state.mean = elites.mean(dim=0)
            state.std = elites.std(dim=0, unbiased=False).clamp(min=config.min_std)
            spread = mixture_spread(elites)
            best = state.best[0]
            mean = state.mean if state.mean.ndim == 1 else state.mean.mean(dim=1)
            state.history.append(
                {
                    "generation": generation,
                    "best_accuracy": best.accuracy,
                    "best_loglik": None if best.loglik is None else round(best.loglik, 6),
                    "mean_score": sum(f.score for f in fitness) / len(fitness),
                    "mean_alpha": [round(float(a), 4) for a in mean],
                    "max_std": round(float(state.std.max()), 6),
                    "spread": round(spread, 6),
                    "stale": state.stale,
                }
            )
            state.finished = _stops(config, state.history[-1])
            state.evaluations, state.reused = population.evaluations, population.reused
            state.seconds += time.perf_counter() - started
            if journal is not None:
                journal.write(state)
            if progress:
                progress(generation + 1, config.generations, best.score)
    finally:
        switch.adapter.revert()
    assert state.best is not None
    return _result(population, state.best, state.history, state.seconds, name or f"cem-{task.name}")


def _stops(config: CEMConfig, last: Mapping) -> bool:
    """Whether a search whose last finished generation is `last` (its history entry) stops there."""
    spread = last.get("spread")  # absent from generations written before the spread was recorded
    return (
        last["generation"] + 1 >= config.generations
        or (config.stop_at_perfect and last["best_accuracy"] is not None and last["best_accuracy"] >= 1.0)
        or (config.patience is not None and last.get("stale", 0) >= config.patience)
        or (config.tolerance > 0 and spread is not None and spread < config.tolerance and _elites(config) > 1)
    )


def _elites(config: CEMConfig) -> int:
    return max(1, round(config.elite_ratio * config.population))


def mixture_spread(members: torch.Tensor) -> float:
    """How far apart the mixtures of `members` (α of shape (N, K) or (N, K, M)) are: the largest
    std over the members of an expert's share αₖ / Σα (per matrix when per-matrix). The composition
    normalises the scale of z' = Σ αₖ zₖ, so only these shares change the weights: α = (0.3, 0, 0)
    and (0.9, 0, 0) are the same mixture, and a search that has settled on them has converged even
    though α itself still varies. An all-zero α counts as uniform, as `mixture` composes it."""
    total = members.sum(dim=1, keepdim=True)
    shares = torch.where(total > 0, members / total.clamp(min=1e-12), torch.full_like(members, 1 / members.shape[1]))
    return float(shares.std(dim=0, unbiased=False).max())


def search_identity(
    loaded: LoadedModel, experts: Sequence[ExpertVector], task: Task, shots: Sequence[dict], config: CEMConfig
) -> dict:
    """What makes two searches the same search: the model and its dtype, each expert's z, the task
    and its shots, and every setting of `CEMConfig` (a checkpoint continues only the same search)."""
    digests = {}
    for expert in experts:
        digest = hashlib.sha256()
        for module in sorted(expert.z):
            digest.update(module.encode() + expert.z[module].detach().float().cpu().numpy().tobytes())
        digests[expert.name] = digest.hexdigest()
    return {
        "model": loaded.fingerprint,
        "dtype": str(loaded.dtype).removeprefix("torch."),
        "experts": digests,
        "task": task.name,
        "shots": [str(example.get("id", i)) for i, example in enumerate(shots)],
        "config": {f.name: getattr(config, f.name) for f in fields(CEMConfig) if f.name != "generations"},
    }


@dataclass
class _SearchState:
    """Where a search stands after its finished generations: what the next one samples from (the
    distribution and the random generator), the best member, and what was recorded so far."""

    mean: torch.Tensor
    std: torch.Tensor
    generator: torch.Generator
    best: tuple[Fitness, torch.Tensor] | None = None
    history: list[dict] = field(default_factory=list)
    stale: int = 0  # generations since the best last improved
    evaluations: int = 0
    reused: int = 0
    seconds: float = 0.0  # wall time of the finished generations
    finished: bool = False

    @classmethod
    def start(cls, shape: tuple[int, ...], config: CEMConfig) -> _SearchState:
        """The first generation's: mean 1/K, std `init_std`, the generator seeded by `config.seed`."""
        mean = torch.full(shape, 1.0 / shape[0])
        return cls(mean, torch.full(shape, config.init_std), torch.Generator().manual_seed(config.seed))

    def to_json(self) -> dict:
        best = None
        if self.best is not None:
            fitness, alphas = self.best
            best = {"key": list(fitness.key), "accuracy": fitness.accuracy, "loglik": fitness.loglik}
            best["alphas"] = alphas.tolist()
        return {
            "mean": self.mean.tolist(),  # float32 values: exact as JSON numbers
            "std": self.std.tolist(),
            "generator": base64.b64encode(self.generator.get_state().numpy().tobytes()).decode(),
            "best": best,
            "history": self.history,
            "stale": self.stale,
            "evaluations": self.evaluations,
            "reused": self.reused,
            "seconds": self.seconds,
            "finished": self.finished,
        }

    @classmethod
    def from_json(cls, data: Mapping) -> _SearchState:
        generator = torch.Generator()
        generator.set_state(torch.frombuffer(bytearray(base64.b64decode(data["generator"])), dtype=torch.uint8))
        best = None
        if data["best"] is not None:
            recorded = data["best"]
            fitness = Fitness(tuple(recorded["key"]), recorded["accuracy"], recorded["loglik"])
            best = (fitness, torch.tensor(recorded["alphas"], dtype=torch.float32))
        return cls(
            torch.tensor(data["mean"], dtype=torch.float32), torch.tensor(data["std"], dtype=torch.float32),
            generator, best, list(data["history"]), data["stale"], data["evaluations"], data["reused"],
            data["seconds"], data["finished"],
        )  # fmt: skip


class _Checkpoint:
    """The file a search keeps its state in: written atomically after each generation with what
    the search is (`search_identity`), and read back only by the same search."""

    def __init__(self, path: Path, identity: dict):
        self.path = path
        self.identity = json.loads(json.dumps(identity))  # as it reads back (tuples become lists)

    def read(self) -> _SearchState | None:
        if not self.path.exists():
            return None
        try:
            recorded = json.loads(self.path.read_text(encoding="utf-8"))
            identity, state = recorded["search"], recorded["state"]
            if not isinstance(identity, dict):
                raise TypeError("no description of the search")
            if isinstance(identity.get("config"), dict):  # files that recorded the generation budget too
                identity["config"].pop("generations", None)
        except (json.JSONDecodeError, KeyError, TypeError) as error:
            raise self.unreadable(error) from error
        if identity != self.identity:
            differences = sorted(
                key for key in set(identity) | set(self.identity) if identity.get(key) != self.identity.get(key)
            )
            raise DispatchError(
                f"{self.path} holds another CEM search (its {', '.join(differences)} differ): delete it to search "
                "again, or run the search it belongs to"
            )
        try:
            return _SearchState.from_json(state)
        except (KeyError, TypeError, ValueError, RuntimeError) as error:  # a field missing or malformed
            raise self.unreadable(error) from error

    def unreadable(self, error: Exception) -> DispatchError:
        return DispatchError(f"{self.path} is not a CEM search state t2 wrote ({error!r}): delete it to search again")

    def write(self, state: _SearchState) -> None:
        text = json.dumps({"search": self.identity, "state": state.to_json()}, indent=1)
        atomic_write_text(self.path, text + "\n")


class _Population:
    """Scores candidate α on the shots: composes each candidate's mixture into the model, or takes
    its scores from the caller's memo; counts the candidates scored and those reused."""

    def __init__(
        self,
        loaded: LoadedModel,
        switch: ExpertSwitch,
        experts: Sequence[ExpertVector],
        task: Task,
        shots: Sequence[dict],
        config: CEMConfig,
        scores: MutableMapping[bytes, dict[str, float]] | None,
    ):
        self.loaded, self.switch, self.experts, self.task, self.shots = loaded, switch, list(experts), task, shots
        self.config, self.memo = config, scores
        self.modules = sorted(experts[0].z)
        self.evaluations, self.reused = 0, 0
        self.generation_config = GenerationConfig(
            max_new_tokens=config.max_new_tokens or answer_budget(loaded.name, task),
            batch_size=config.batch_size,
            stop=tuple(task.stop),
        )

    def score(self, generation: int, members: torch.Tensor) -> list[Fitness]:
        fitness, wanted = [], self.config.fitness
        for member, alphas in enumerate(members):
            memo_key = alphas.numpy().tobytes()
            known = self.memo.get(memo_key, {}) if self.memo is not None else {}
            self.evaluations += 1
            if all(part in known for part in wanted.split("+")):
                fitness.append(make_fitness(wanted, known))
                self.reused += 1
                continue
            vector = mixture(self.experts, alphas, self.modules, f"cem-{generation}-{member}")
            adapter = self.switch.adapter
            adapter.load_weights(adapter.compose(vector), f"cem:{generation}:{member}")
            fitness.append(shot_fitness(self.loaded, self.task, self.shots, self.generation_config, wanted, known))
            if self.memo is not None:
                found = (("accuracy", fitness[-1].accuracy), ("loglik", fitness[-1].loglik))
                self.memo[memo_key] = {k: v for k, v in found if v is not None}
        return fitness


def _result(
    population: _Population, best: tuple[Fitness, torch.Tensor], history: list[dict], seconds: float, name: str
) -> CEMResult:
    """The best α as a named mixture, its provenance recording the search."""
    (fitness, alphas), config, task = best, population.config, population.task
    vector = mixture(population.experts, alphas, population.modules, name)
    vector.domain = OTHER if task.domain == CLASSIFICATION else task.domain  # the task's domain is data
    vector.provenance |= {
        "objective": "cem",
        "task": task.name,
        "cem": {
            "shots": [str(example.get("id", i)) for i, example in enumerate(population.shots)],
            "accuracy": fitness.accuracy,
            "loglik": fitness.loglik,
            "generations": len(history),
            "evaluations": population.evaluations,
            "fitness": config.fitness,
            "per_matrix": config.per_matrix,
            "seed": config.seed,
            "population": config.population,
            "elite_ratio": config.elite_ratio,
        },
    }
    names = [e.name for e in population.experts]
    return CEMResult(
        vector, alphas, fitness.accuracy, fitness.loglik, names, population.modules, history,
        population.evaluations, population.reused, seconds,
    )  # fmt: skip
