"""Which experts pass 1 routes over: chosen by name, or the default set read from registry metadata.

Domains are data: an expert's label is the `domain` its metadata declares (math, code, a user's
own …); "classification" marks the dispatch classifier, "other" an expert that declares no domain.
The default set is one expert per declared domain. When two experts claim one domain, the shipped
one is used and the choice is recorded in `ExpertChoice.notes` (the CLI prints it with how to pick
another, `--experts`); an expert that cannot be loaded is recorded in `skipped` and left out.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from t2cli.defaults import CLASSIFICATION, OTHER
from t2cli.errors import DispatchError, ExpertError, RegistryError, T2Error
from t2cli.expert import ExpertVector
from t2cli.registry import Registry, RegistryEntry
from t2cli.tasks.base import Task
from t2cli.tasks.cls import SHIPPED_CLS_SOURCES


@dataclass
class ExpertChoice:
    """{label: expert} to route over (labels sorted), the classifier if one is registered, and
    what the choice noticed: `notes` (several experts claimed a domain) and `skipped` (unusable)."""

    experts: dict[str, ExpertVector]
    classifier: ExpertVector | None = None
    notes: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)

    @property
    def messages(self) -> list[str]:
        return self.notes + [f"skipped {line}" for line in self.skipped]


def _load(entry: RegistryEntry, fingerprint: str | None) -> ExpertVector:
    if entry.error:
        raise ExpertError(entry.error)
    expert = ExpertVector.load(entry.path)
    if fingerprint is not None and expert.base_fingerprint != fingerprint:
        raise ExpertError(f"made for another version of {entry.base_model} (fingerprint {expert.base_fingerprint})")
    return expert


def _label(expert: ExpertVector) -> str:
    return expert.name if expert.domain == OTHER else expert.domain


def choose_experts(
    registry: Registry,
    base_model: str,
    names: Sequence[str] | None = None,
    fingerprint: str | None = None,
) -> ExpertChoice:
    """The experts to route over for `base_model`.

    With `names`: exactly those (an expert declaring no domain is labelled by its name; the
    classifier may be among them); an unknown, broken or doubled one is an error. Without: one
    expert per declared domain — the shipped one first, then by name — skipping (and recording)
    experts that cannot be loaded or were made for another `fingerprint` of the model. Every
    chosen expert must target the same matrices as the first.
    """
    if names is not None:
        return _named(registry, base_model, names, fingerprint)
    by_domain: dict[str, list[RegistryEntry]] = {}
    skipped: list[str] = []
    for entry in registry.list(base_model):
        if entry.error:
            skipped.append(f"{entry.name}: {entry.error}")
            continue
        if entry.domain != OTHER:
            by_domain.setdefault(entry.domain, []).append(entry)
    chosen: dict[str, ExpertVector] = {}
    notes: list[str] = []
    for domain in sorted(by_domain):
        candidates = []  # every claimant is loaded (z vectors are small), so a broken one is always reported
        for entry in sorted(by_domain[domain], key=lambda entry: (not entry.shipped, entry.name)):
            try:
                loaded = _load(entry, fingerprint)
            except (ExpertError, OSError) as error:
                skipped.append(f"{entry.name}: {error}")
                continue
            candidates.append(entry)
            chosen.setdefault(domain, loaded)
        if len(candidates) > 1:
            used = chosen[domain].name
            others = [entry.name for entry in candidates if entry.name != used]
            shipped = " (shipped)" if any(e.shipped and e.name == used for e in candidates) else ""
            notes.append(
                f"{len(candidates)} experts claim the domain {domain!r}: using {used}{shipped}, not "
                f"{', '.join(others)}; choose with --experts (e.g. --experts {others[0]},…)"
            )
    classifier = chosen.pop(CLASSIFICATION, None)
    return _same_targets(ExpertChoice(chosen, classifier, notes, skipped), strict=False)


def _named(registry: Registry, base_model: str, names: Sequence[str], fingerprint: str | None) -> ExpertChoice:
    chosen: dict[str, ExpertVector] = {}
    classifier: ExpertVector | None = None
    for name in names:
        entry = registry.find(name, base_model)
        try:
            expert = _load(entry, fingerprint)
        except (ExpertError, OSError) as error:
            raise DispatchError(f"the expert {name!r} cannot be used: {error}") from error
        if expert.domain == CLASSIFICATION:
            if classifier is not None:
                raise DispatchError(f"--experts names two classifiers ({classifier.name}, {name}): keep one")
            classifier = expert
            continue
        label = _label(expert)
        if label in chosen:
            raise DispatchError(
                f"{chosen[label].name} and {name} both claim the domain {label!r}: pass only one of them to --experts"
            )
        chosen[label] = expert
    return _same_targets(ExpertChoice(dict(sorted(chosen.items())), classifier), strict=True)


def _same_targets(choice: ExpertChoice, strict: bool) -> ExpertChoice:
    """Drop (or refuse, when `strict`) experts whose targets differ from the first one's: one SVD
    store serves them all."""
    everyone = list(choice.experts.values()) + ([choice.classifier] if choice.classifier else [])
    if not everyone:
        return choice
    targets = everyone[0].targets
    for expert in everyone[1:]:
        if expert.targets == targets:
            continue
        problem = f"{expert.name}: adapts {expert.targets}, the others {targets}"
        if strict:
            raise DispatchError(f"the chosen experts do not share one SVD store ({problem})")
        choice.skipped.append(problem)
        if expert is choice.classifier:
            choice.classifier = None
        else:
            choice.experts = {label: e for label, e in choice.experts.items() if e is not expert}
    return choice


def domain_experts(registry: Registry, base_model: str) -> dict[str, str]:
    """{domain: expert name} of the default set (see `choose_experts`)."""
    return {label: expert.name for label, expert in choose_experts(registry, base_model).experts.items()}


def load_domain_experts(registry: Registry, base_model: str) -> dict[str, ExpertVector]:
    """{domain: expert} of the default set; at least one."""
    experts = choose_experts(registry, base_model).experts
    if not experts:
        raise DispatchError(
            f"no domain experts are registered for {base_model}: train them with {training_command()} "
            "or pull a set with `t2 experts pull`"
        )
    return experts


def classification_expert(registry: Registry, base_model: str) -> ExpertVector:
    """The registered dispatch classifier (domain "classification"): the shipped one first."""
    classifier = choose_experts(registry, base_model).classifier
    if classifier is None:
        raise DispatchError(
            f"no classification expert is registered for {base_model}: train one with "
            f"`t2 train --task cls --model {base_model}` (it is registered with domain 'classification')"
        )
    return classifier


def default_routing_strategy(registry: Registry, base_model: str) -> str:
    """The pass-1 strategy to use when none is named: loglik-cls where the model has a dispatch
    classifier, else loglik (the same one prefill, with no trained classifier)."""
    return "loglik" if choose_experts(registry, base_model).classifier is None else "loglik-cls"


def training_command() -> str:
    """The command that trains an expert of each default domain, read from the domain table
    (`t2cli.tasks.cls.SHIPPED_CLS_SOURCES`): "`t2 train --task gsm8k|mbpp-plus|arc-easy`"."""
    return f"`t2 train --task {'|'.join(task.name for _, task in SHIPPED_CLS_SOURCES)}`"


# --------------------------------------------------------------------------- training prompts


def expert_task(expert: ExpertVector) -> Task:
    """The task an expert was trained on (named in its provenance, or rebuilt from its data-file spec)."""
    from t2cli.tasks import get_task

    spec = expert.provenance.get("task_spec")
    if isinstance(spec, dict):  # trained from a data file: rebuild that task from its recorded settings
        from t2cli.tasks.datafile import task_from_spec

        try:
            return task_from_spec(spec, origin=f"{expert.name}'s provenance")
        except T2Error as error:
            raise DispatchError(f"{expert.name}'s data-file task cannot be rebuilt: {error}") from error
    name = expert.provenance.get("task")
    if not name:
        raise DispatchError(f"{expert.name}'s provenance names no task: its training prompts are unknown")
    try:
        return get_task(name)
    except ValueError as error:
        raise DispatchError(f"{expert.name} was trained on the task {name!r}, which is not registered here") from error


def training_sources(experts: dict[str, ExpertVector]) -> list[tuple[str, Task]]:
    """(label, task) per expert: the prompts of each label are its expert's training prompts.
    Ordered as the tasks are registered (the order the shipped classification set was built in)."""
    from t2cli.tasks import TASKS

    order = {name: i for i, name in enumerate(TASKS)}
    sources = [(label, expert_task(expert)) for label, expert in experts.items()]
    return sorted(sources, key=lambda source: (order.get(source[1].name, len(order)), source[0]))


def classifier_task(registry: Registry, base_model: str, names: Sequence[str] | None = None) -> Task:
    """The `cls` task for the chosen experts (default set without `names`): its examples are the
    training prompts of each expert's task, labelled with the expert's domain. `t2 train --task
    cls` trains the classifier on it, so a new domain is routed after one command."""
    from t2cli.tasks.cls import cls_task

    choice = choose_experts(registry, base_model, names)
    if not choice.experts:
        raise RegistryError(f"no domain experts are registered for {base_model}: nothing to classify")
    if len(choice.experts) < 2:  # every example would carry the one label: the classifier learns a constant
        (label,) = choice.experts
        raise RegistryError(
            f"only one domain expert is chosen for {base_model} ({label}): a classifier needs at least two "
            f"domains to tell apart — register another domain expert first ({training_command()})"
        )
    return cls_task(training_sources(choice.experts))
