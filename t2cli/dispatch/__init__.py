"""Pass 1 of two-pass inference: decide which expert (or mixture) answers a prompt.

Every strategy is one entry of the table in `t2cli.strategies` (name → factory); its dispatcher
returns one `Decision` per prompt and does its one-time work in `prepare()`:

    none         always the base model                                      (base)
    fixed:NAME   always the registered expert NAME                          (base)
    prompt, cls  the base model / the classification expert names the domain (prompt)
    loglik, loglik-cls   one prefill, the domain names scored by log-likelihood (loglik)
    centroid     one prefill, the nearest domain centroid of hidden states (centroid)
    cem          a mixture of the experts searched on labelled shots       (cem)

The experts routed over are found through registry metadata, their `domain`, never by hard-coded
names (`choose_experts`). The model's weights are switched by one `ExpertSwitch`
(t2cli.adapt), shared with pass 2.
"""

from __future__ import annotations

from t2cli.adapt import ExpertSwitch
from t2cli.defaults import CLASSIFICATION
from t2cli.dispatch.base import (
    PASS1_DTYPES,
    Decision,
    DispatchContext,
    Dispatcher,
    FixedDispatcher,
    ModelDispatcher,
    make_dispatcher,
    pass1_dtype_of,
)
from t2cli.dispatch.cem import CEMDispatcher
from t2cli.dispatch.centroid import CentroidDispatcher
from t2cli.dispatch.experts import (
    ExpertChoice,
    choose_experts,
    classification_expert,
    classifier_task,
    domain_experts,
    expert_task,
    load_domain_experts,
    training_sources,
)
from t2cli.dispatch.loglik import (
    LoglikDispatcher,
    SharedPrefix,
    first_token_logits,
    label_logliks,
    label_logliks_batch,
    last_tokens,
)
from t2cli.dispatch.prompt import PromptDispatcher
from t2cli.errors import DispatchError
from t2cli.strategies import STRATEGIES, Strategy, register_strategy, strategy_names

__all__ = [
    "CLASSIFICATION",
    "PASS1_DTYPES",
    "STRATEGIES",
    "CEMDispatcher",
    "CentroidDispatcher",
    "Decision",
    "DispatchContext",
    "DispatchError",
    "Dispatcher",
    "ExpertChoice",
    "ExpertSwitch",
    "FixedDispatcher",
    "LoglikDispatcher",
    "ModelDispatcher",
    "PromptDispatcher",
    "SharedPrefix",
    "Strategy",
    "choose_experts",
    "classification_expert",
    "classifier_task",
    "domain_experts",
    "expert_task",
    "first_token_logits",
    "label_logliks",
    "label_logliks_batch",
    "last_tokens",
    "load_domain_experts",
    "make_dispatcher",
    "pass1_dtype_of",
    "register_strategy",
    "strategy_names",
    "training_sources",
]
