"""Pass 1 of two-pass inference: decide which expert (or mixture) answers a prompt.

Every strategy is one entry of the table in `t2cli.dispatch.table` (name → options, factory) and
one module here holding its options dataclass and its dispatcher, which returns one `Decision` per
prompt and does its one-time work in `prepare()`:

    none         always the base model                                      (base)
    fixed:NAME   always the registered expert NAME                          (base)
    prompt, cls  the base model / the classification expert names the domain (prompt)
    loglik, loglik-cls   one prefill, the domain names scored by log-likelihood (loglik)
    centroid     one prefill, the nearest domain centroid of hidden states (centroid)
    cem          a mixture of the experts searched on labelled shots       (cem, cem_search)

The experts routed over are found through registry metadata, their `domain`, never by hard-coded
names (`choose_experts`). The model's weights are switched by one `ExpertSwitch`
(t2cli.adapt), shared with pass 2.

The names below are imported from their modules when first used, so that the table
(`t2cli.dispatch.table`, standard library only) is read without importing torch.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

_HOMES = {
    "t2cli.adapt": ("ExpertSwitch",),
    "t2cli.defaults": ("CLASSIFICATION",),
    "t2cli.errors": ("DispatchError",),
    "t2cli.dispatch.base": (
        "Decision",
        "DispatchContext",
        "Dispatcher",
        "FixedDispatcher",
        "ModelDispatcher",
        "PrefillOptions",
        "make_dispatcher",
    ),
    "t2cli.dispatch.cem": ("CEMDispatcher", "CEMOptions"),
    "t2cli.dispatch.cem_search": ("CEMConfig", "CEMResult", "cem_search", "split_shots"),
    "t2cli.dispatch.centroid": ("CentroidDispatcher", "CentroidOptions"),
    "t2cli.dispatch.experts": (
        "ExpertChoice",
        "choose_experts",
        "classification_expert",
        "classifier_task",
        "domain_experts",
        "expert_task",
        "load_domain_experts",
        "training_sources",
    ),
    "t2cli.dispatch.loglik": (
        "LoglikDispatcher",
        "LoglikOptions",
        "SharedPrefix",
        "first_token_logits",
        "label_logliks",
        "label_logliks_batch",
        "last_tokens",
    ),
    "t2cli.dispatch.prompt": ("PromptDispatcher", "PromptOptions"),
    "t2cli.dispatch.table": (
        "STRATEGIES",
        "NoOptions",
        "Strategy",
        "parse_strategy",
        "register_strategy",
        "strategy_names",
        "strategy_options",
    ),
}
_HOME_OF = {name: module for module, names in _HOMES.items() for name in names}

__all__ = sorted(_HOME_OF)


def __getattr__(name: str) -> Any:
    if name not in _HOME_OF:
        raise AttributeError(f"module 't2cli.dispatch' has no attribute {name!r}")
    return getattr(import_module(_HOME_OF[name]), name)


def __dir__() -> list[str]:
    return __all__
