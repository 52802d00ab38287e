"""The per-row deltas the engine keeps ready: one set per served expert, and the most recent
mixtures and pass-1 choices beyond them (computing a set runs over every targeted matrix, so a
repeated mixture or choice reuses the last one)."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping

import torch

from t2cli.expert import ExpertVector, mix
from t2cli.serve.layer import PerRowModel

Deltas = dict[str, torch.Tensor]


class DeltaCache:
    """Deltas by key: a served expert's name, a mixture's sorted (name, weight) pairs, or a
    pass-1 choice's (name, checksum). `experts` is the engine's dict of served experts, shared:
    what it holds is never evicted; of the rest the `extra` most recent are kept."""

    def __init__(self, rows_model: PerRowModel, experts: dict[str, ExpertVector], extra: int = 64) -> None:
        self.rows_model = rows_model
        self.experts = experts
        self.extra = extra
        self._deltas: OrderedDict[object, Deltas] = OrderedDict()
        for expert in experts.values():
            self._deltas[expert.name] = rows_model.deltas(expert)

    def served(self, name: str) -> Deltas:
        return self._deltas[name]

    def put(self, name: str, deltas: Deltas) -> None:
        """Set a served expert's deltas (computed by the caller, who adds it to `experts`)."""
        self._deltas[name] = deltas

    def of_expert(self, expert: ExpertVector) -> Deltas:
        """An expert's deltas: the served one's when it is that very expert, else computed once."""
        key = ("expert", expert.name, expert.tensors_sha256 or id(expert))
        if expert.name in self.experts and self.experts[expert.name] is expert:
            key = expert.name
        deltas = self._deltas.get(key)
        return deltas if deltas is not None else self._remember(key, self.rows_model.deltas(expert))

    def of_mix(self, weights: Mapping[str, float]) -> Deltas:
        """The deltas of a mixture {served expert: weight}."""
        key = tuple(sorted(weights.items()))
        deltas = self._deltas.get(key)
        if deltas is None:
            names = [name for name, _ in key]
            mixture = mix([self.experts[n] for n in names], [float(w) for _, w in key], name="mixture")
            deltas = self._remember(key, self.rows_model.deltas(mixture))
        return deltas

    def _remember(self, key: object, deltas: Deltas) -> Deltas:
        self._deltas[key] = deltas
        extra = [k for k in self._deltas if k not in self.experts]
        for old in extra[: max(0, len(extra) - self.extra)]:
            del self._deltas[old]
        return deltas
