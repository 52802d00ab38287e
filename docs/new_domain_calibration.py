"""Why the retrained classifier loses math under loglik-cls: its contextual-calibration prior, against the
raw (uncalibrated) argmax, on the first 12 math prompts of the four-domain cls test split, 32 request tokens.

    T2_REGISTRY=<the registry of docs/new_domain.sh> python docs/new_domain_calibration.py
"""

from t2cli.adapt import DenseAdapter
from t2cli.dispatch import ExpertSwitch, LoglikOptions, classifier_task, make_dispatcher
from t2cli.models import load_model
from t2cli.registry import Registry
from t2cli.svd_store import decompose

names = ["code", "math", "reasoning", "geography"]
loaded = load_model("smollm2-135m")
store = decompose(loaded, ["mlp"])
switch = ExpertSwitch(DenseAdapter(loaded, store))
reg = Registry()
ex = [e for e in classifier_task(reg, loaded.name, names).load("test").examples if e["answer"] == "math"][:12]
for clf in ("dispatch-cls-4", "dispatch-cls"):
    d = make_dispatcher("loglik-cls", loaded, switch, reg, LoglikOptions(request_tokens=32), experts=names + [clf])
    d.prepare()
    print(clf, "prior", [round(x, 2) for x in d.prior], d.candidates)
    dec = d.decide([e["question"] for e in ex])
    print(" calibrated:", [x.label for x in dec])
    print(
        " raw argmax:", [d.candidates[max(range(len(x.details["raw"])), key=x.details["raw"].__getitem__)] for x in dec]
    )
