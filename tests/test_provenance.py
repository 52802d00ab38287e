"""The three records (an expert's recipe, a report's record, an export's record) and the staleness
check: a report whose expert changed since is found; a true report passes."""

import json
import re
from types import SimpleNamespace

import pytest
import torch
from typer.testing import CliRunner

from t2cli.expert import ExpertVector
from t2cli.provenance import (
    NO_RECORD,
    ValidationRecord,
    check_record,
    check_reports,
    export_record,
    mixture_recipe,
    report_record,
    training_recipe,
    validation_record,
)
from t2cli.registry import Registry

BASE = SimpleNamespace(name="tiny", fingerprint="a" * 32, dtype=torch.bfloat16)
CREATED = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ")


# --------------------------------------------------------------------------- the records


@pytest.mark.parametrize(
    "experts, mixture, expected",
    [
        (None, None, {"base_model": "tiny", "base_fingerprint": "a" * 32, "dtype": "bfloat16", "experts": {}}),
        (
            {"math": "m" * 64, "code": "c" * 64},  # sorted by name, whatever order they came in
            None,
            {
                "base_model": "tiny",
                "base_fingerprint": "a" * 32,
                "dtype": "bfloat16",
                "experts": {"code": "c" * 64, "math": "m" * 64},
            },
        ),
        (
            {"math": "m" * 64},
            {"math": 1, "code": 0.25},  # the mixture's weights as floats, sorted by name
            {
                "base_model": "tiny",
                "base_fingerprint": "a" * 32,
                "dtype": "bfloat16",
                "experts": {"math": "m" * 64},
                "mixture": {"code": 0.25, "math": 1.0},
            },
        ),
        (
            None,
            {},
            {"base_model": "tiny", "base_fingerprint": "a" * 32, "dtype": "bfloat16", "experts": {}},
        ),  # no mixture: no key
    ],
)
def test_report_record(experts, mixture, expected):
    record = report_record(BASE, experts, mixture)
    assert record == expected and list(record["experts"]) == sorted(record["experts"])
    assert json.loads(json.dumps(record)) == record


@pytest.mark.parametrize("task_spec", [None, {}, {"kind": "qa", "train": "data/train.jsonl"}])
def test_training_recipe(task_spec):
    hyperparameters = {"method": "svf", "objective": "rl", "command": "t2 train --task toy", "lr": 0.002}
    metrics = {"best_val_accuracy": 0.5, "iterations": 3}
    recipe = training_recipe(
        hyperparameters, "toy", metrics, data_source="builtin", world_size=2, wall_time=12.3456, task_spec=task_spec
    )
    created = recipe.pop("created")
    assert CREATED.fullmatch(created)
    expected = {
        "task": "toy",
        "method": "svf",
        "objective": "rl",
        "hyperparameters": hyperparameters,
        "metrics": metrics,
        "data_source": "builtin",
        "world_size": 2,
        "wall_time_s": 12.35,
        "command": "t2 train --task toy",
    }
    if task_spec:  # a task from a data file: how to rebuild it
        expected["task_spec"] = task_spec
    assert recipe == expected
    assert recipe["hyperparameters"] is not hyperparameters  # a copy: the run's config stays its own


def test_validation_record_of_an_interim_expert_and_of_recipes_without_one():
    hyperparameters = {"method": "svf", "objective": "rl", "command": "t2 train", "iters": 120}
    metrics = {"base_val_accuracy": 0.22, "best_val_accuracy": 0.32, "best_iteration": 30, "iterations": 31}
    recipe = training_recipe(
        hyperparameters, "gsm8k", metrics | {"val_examples": 50}, data_source="d", world_size=1, wall_time=1
    )
    assert validation_record(recipe) == ValidationRecord(0.22, 0.32, 30, 31, 120, 50)
    assert validation_record(mixture_recipe(("math", "code"), (1, 1), True, {})) is None
    assert validation_record({}) is None


def test_mixture_recipe():
    recipe = mixture_recipe(("math", "code"), (3, 1.0), True, {"code": {"m.up": 2}})
    assert CREATED.fullmatch(recipe.pop("created"))
    assert recipe == {
        "objective": "mix",
        "recipe": {
            "experts": ["math", "code"],
            "weights": [3.0, 1.0],
            "normalize": True,
            "per_layer": {"code": {"m.up": 2}},
        },
    }


def test_export_record():
    assert export_record("math", "math", BASE, ("mlp",), "bfloat16") == {
        "expert": "math",
        "domain": "math",
        "base_model": "tiny",
        "base_fingerprint": "a" * 32,
        "targets": ["mlp"],
        "dtype": "bfloat16",
    }


# --------------------------------------------------------------------------- the check


def expert(name, value):
    return ExpertVector({"m.up": torch.full((4,), value)}, name, "tiny", "a" * 32, ["mlp"], domain="math")


def write_report(folder, record):
    folder.mkdir(parents=True)
    (folder / "report.json").write_text(json.dumps({"task": "t", "accuracy": 0.5} | record))


def test_a_report_whose_expert_changed_is_flagged(tmp_path):
    registry = Registry(roots=[tmp_path / "registry"], write_root=tmp_path / "registry")
    math = registry.load(registry.add(expert("math", 0.5)).name, "tiny")
    results = tmp_path / "results"
    write_report(results / "svf", {"provenance": report_record(BASE, {"math": math.tensors_sha256})})
    write_report(results / "base", {"provenance": report_record(BASE)})
    assert check_reports(results, registry) == []

    registry.add(expert("math", 0.25), overwrite=True)  # the expert is replaced: the SVF row is stale
    findings = check_reports(results, registry)
    assert [f.report.parent.name for f in findings] == ["svf"]
    assert "expert 'math' changed since this report" in findings[0].problem

    registry.remove("math", "tiny")
    assert "no longer registered" in check_reports(results, registry)[0].problem
    write_report(results / "old", {})
    assert any("no provenance" in f.problem for f in check_reports(results, registry))


def test_a_benchmark_record_whose_expert_changed_is_flagged(tmp_path):
    """Benchmark outputs (bench/results: cem lines, dispatch files) carry the same record."""
    registry = Registry(roots=[tmp_path / "registry"], write_root=tmp_path / "registry")
    math = registry.load(registry.add(expert("math", 0.5)).name, "tiny")
    record = report_record(BASE, {"math": math.tensors_sha256})
    source = tmp_path / "cem.jsonl"
    assert check_record(source, record, registry) == []
    registry.add(expert("math", 0.25), overwrite=True)
    (finding,) = check_record(source, record, registry)
    assert finding.report == source and "expert 'math' changed" in finding.problem
    assert "no provenance" in check_record(source, {"experts": {}}, registry)[0].problem
    for broken in ({}, {"base_model": "tiny"}, {"base_model": "tiny", "base_fingerprint": "a", "experts": 3}, None):
        assert [f.problem for f in check_record(source, broken, registry)] == [NO_RECORD]


def test_a_report_on_other_base_weights_is_flagged(tmp_path):
    registry = Registry(roots=[tmp_path / "registry"], write_root=tmp_path / "registry")
    registry.add(expert("math", 0.5))
    write_report(
        tmp_path / "results" / "base",
        {"provenance": report_record(SimpleNamespace(name="tiny", fingerprint="b" * 32, dtype=torch.float32))},
    )
    (finding,) = check_reports(tmp_path / "results", registry)
    assert "base model tiny changed" in finding.problem


def test_eval_with_an_expert_records_its_hash_and_the_base_fingerprint(llama, tmp_path):
    from t2cli.cli.app import app
    from t2cli.svd_store import decompose

    model_dir = tmp_path / "tiny-model"
    llama.model.save_pretrained(model_dir)
    llama.tokenizer.save_pretrained(model_dir)
    from t2cli.models import load_model

    loaded = load_model(str(model_dir), device="cpu")
    ranks = decompose(loaded, ["mlp"]).ranks
    vector = ExpertVector(
        {n: torch.rand(r) for n, r in ranks.items()}, "math", loaded.name, loaded.fingerprint, ["mlp"]
    )
    entry = Registry().add(vector)
    args = [
        "eval",
        "--task",
        "arc-easy",
        "--model",
        str(model_dir),
        "--expert",
        "math",
        "--limit",
        "1",
        "--max-new-tokens",
        "2",
        "--out",
        str(tmp_path / "eval"),
    ]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    record = json.loads((tmp_path / "eval" / "report.json").read_text())["provenance"]
    assert record == {
        "base_model": loaded.name,
        "base_fingerprint": loaded.fingerprint,
        "dtype": "float32",
        "experts": {"math": entry.meta["tensors_sha256"]},
    }
    assert check_reports(tmp_path / "eval", Registry()) == []
