"""The staleness check: a report whose expert changed since is found; a true report passes."""

import json
from types import SimpleNamespace

import torch
from typer.testing import CliRunner

from t2cli.evaluate import provenance
from t2cli.expert import ExpertVector
from t2cli.registry import Registry
from t2cli.results import check_provenance, check_reports

BASE = SimpleNamespace(name="tiny", fingerprint="a" * 32)


def expert(name, value):
    return ExpertVector({"m.up": torch.full((4,), value)}, name, "tiny", "a" * 32, ["mlp"], domain="math")


def write_report(folder, record):
    folder.mkdir(parents=True)
    (folder / "report.json").write_text(json.dumps({"task": "t", "accuracy": 0.5} | record))


def test_a_report_whose_expert_changed_is_flagged(tmp_path):
    registry = Registry(roots=[tmp_path / "registry"], write_root=tmp_path / "registry")
    math = registry.load(registry.add(expert("math", 0.5)).name, "tiny")
    results = tmp_path / "results"
    write_report(results / "svf", {"provenance": provenance(BASE, {"math": math.tensors_sha256})})
    write_report(results / "base", {"provenance": provenance(BASE)})
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
    record = provenance(BASE, {"math": math.tensors_sha256})
    source = tmp_path / "cem.jsonl"
    assert check_provenance(source, record, registry) == []
    registry.add(expert("math", 0.25), overwrite=True)
    (finding,) = check_provenance(source, record, registry)
    assert finding.report == source and "expert 'math' changed" in finding.problem
    assert "no provenance" in check_provenance(source, {"experts": {}}, registry)[0].problem


def test_a_report_on_other_base_weights_is_flagged(tmp_path):
    registry = Registry(roots=[tmp_path / "registry"], write_root=tmp_path / "registry")
    registry.add(expert("math", 0.5))
    write_report(
        tmp_path / "results" / "base", {"provenance": provenance(SimpleNamespace(name="tiny", fingerprint="b" * 32))}
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
        "experts": {"math": entry.meta["tensors_sha256"]},
    }
    assert check_reports(tmp_path / "eval", Registry()) == []
