import json

import pytest
import torch

from t2cli.errors import ExpertError, MixError
from t2cli.expert import FORMAT_VERSION, META_FILE, TENSORS_FILE, ExpertVector, mix

RANKS = {"layers.0.mlp.up_proj": 4, "layers.0.mlp.down_proj": 3}


def make(name="e", seed=0, fingerprint="a" * 32, domain="math"):
    generator = torch.Generator().manual_seed(seed)
    z = {n: torch.rand(r, generator=generator) for n, r in RANKS.items()}
    return ExpertVector(z, name, "tiny", fingerprint, ["mlp"], domain=domain, provenance={"task": "gsm8k"})


def test_round_trip_and_metadata(tmp_path):
    expert = make()
    expert.save(tmp_path / "e")
    meta = json.loads((tmp_path / "e" / META_FILE).read_text())
    assert meta["format_version"] == FORMAT_VERSION and meta["base_fingerprint"] == "a" * 32
    assert meta["num_parameters"] == 7 and meta["domain"] == "math" and meta["provenance"]["task"] == "gsm8k"
    assert list(meta) == sorted(meta)  # sorted keys, like a PEFT adapter config
    loaded = ExpertVector.load(tmp_path / "e")
    assert all(torch.equal(loaded.z[n], expert.z[n]) for n in RANKS)
    loaded.validate_for(RANKS, "tiny", "a" * 32)
    assert not list((tmp_path / "e").glob(".*"))  # no temporary files left behind


def corrupt_truncate(d):
    data = (d / TENSORS_FILE).read_bytes()
    (d / TENSORS_FILE).write_bytes(data[: len(data) // 2])


def corrupt_flip(d):
    data = bytearray((d / TENSORS_FILE).read_bytes())
    data[-3] ^= 0xFF
    (d / TENSORS_FILE).write_bytes(bytes(data))


def corrupt_json(d):
    (d / META_FILE).write_text((d / META_FILE).read_text()[:40])


def future_version(d):
    meta = json.loads((d / META_FILE).read_text())
    meta["format_version"] = 99
    (d / META_FILE).write_text(json.dumps(meta))


def drop_field(d):
    meta = json.loads((d / META_FILE).read_text())
    del meta["base_fingerprint"]
    (d / META_FILE).write_text(json.dumps(meta))


def missing_tensors(d):
    (d / TENSORS_FILE).unlink()


def nan_tensors(d):
    """A NaN written with a matching hash (so only the NaN check can catch it)."""
    import hashlib

    from safetensors.torch import save

    payload = save({n: torch.full((r,), float("nan")) for n, r in RANKS.items()})
    (d / TENSORS_FILE).write_bytes(payload)
    meta = json.loads((d / META_FILE).read_text())
    meta["tensors_sha256"] = hashlib.sha256(payload).hexdigest()
    (d / META_FILE).write_text(json.dumps(meta))


def edit_meta(**changes):
    def damage(d):
        meta = json.loads((d / META_FILE).read_text())
        for key, value in changes.items():
            meta[key] = value
        (d / META_FILE).write_text(json.dumps(meta))

    return damage


def non_utf8_json(d):
    (d / META_FILE).write_bytes((d / META_FILE).read_bytes().replace(b'"tiny"', b'"ti\xffny"'))


def tensors_with_hash(tensors):
    """Replace the tensor file (and its hash), so only the value checks can catch it."""

    def damage(d):
        import hashlib

        from safetensors.torch import save

        payload = save(tensors)
        (d / TENSORS_FILE).write_bytes(payload)
        meta = json.loads((d / META_FILE).read_text())
        meta["tensors_sha256"] = hashlib.sha256(payload).hexdigest()
        (d / META_FILE).write_text(json.dumps(meta))

    return damage


@pytest.mark.parametrize(
    "damage, message",
    [
        (non_utf8_json, "not valid JSON"),
        (edit_meta(targets=5), "'targets' must be a JSON list"),
        (edit_meta(targets=[]), "non-empty list of strings"),
        (edit_meta(base_fingerprint=123), "'base_fingerprint' must be a JSON string"),
        (edit_meta(provenance="trained"), "'provenance' must be a JSON object"),
        (edit_meta(provenance={"metrics": "good"}), "'provenance.metrics' must be a JSON object"),
        (edit_meta(domain=["math"]), "'domain' must be a JSON string"),
        (edit_meta(num_parameters="7"), "'num_parameters' must be a JSON integer"),
        (tensors_with_hash({n: torch.zeros(r) for n, r in RANKS.items()}), "positive sum"),
        (tensors_with_hash({n: -torch.ones(r) for n, r in RANKS.items()}), "positive sum"),
        (tensors_with_hash({n: torch.ones(r, dtype=torch.int64) for n, r in RANKS.items()}), "int64 values"),
        (tensors_with_hash({}), "no z vectors"),
    ],
)
def test_malformed_metadata_and_values_give_one_clear_error(tmp_path, damage, message):
    make().save(tmp_path / "e")
    damage(tmp_path / "e")
    with pytest.raises(ExpertError, match=message) as info:
        ExpertVector.load(tmp_path / "e")
    assert "\n" not in str(info.value)


def test_save_refuses_an_all_zero_z(tmp_path):
    expert = make()
    expert.z["layers.0.mlp.up_proj"] = torch.zeros(4)
    with pytest.raises(ExpertError, match="positive sum"):
        expert.save(tmp_path / "e")


@pytest.mark.parametrize(
    "damage, message",
    [
        (corrupt_truncate, "does not match the hash"),
        (corrupt_flip, "does not match the hash"),
        (corrupt_json, "not valid JSON"),
        (future_version, "format version 99"),
        (drop_field, "lacks required field"),
        (missing_tensors, "is missing"),
        (nan_tensors, "NaN or inf"),
    ],
)
def test_bad_files_give_one_clear_error(tmp_path, damage, message):
    make().save(tmp_path / "e")
    damage(tmp_path / "e")
    with pytest.raises(ExpertError, match=message) as info:
        ExpertVector.load(tmp_path / "e")
    assert "\n" not in str(info.value)


def test_save_refuses_nan(tmp_path):
    expert = make()
    expert.z["layers.0.mlp.up_proj"][0] = float("nan")
    with pytest.raises(ExpertError, match="NaN"):
        expert.save(tmp_path / "e")
    assert not (tmp_path / "e" / META_FILE).exists()


def test_mix_is_the_weighted_sum_with_recipe():
    a, b = make("math", 1), make("code", 2)
    mixed = mix([a, b], [0.6, 0.4], name="m")
    for n in RANKS:
        assert torch.allclose(mixed.z[n], 0.6 * a.z[n] + 0.4 * b.z[n])
    assert mixed.provenance["recipe"] == {
        "experts": ["math", "code"],
        "weights": [0.6, 0.4],
        "normalize": False,
        "per_layer": {},
    }


def test_mix_normalize_and_per_layer():
    a, b = make("math", 1), make("code", 2)
    mixed = mix([a, b], [3.0, 1.0], name="m", normalize=True, per_layer={"code": {"layers.0.mlp.up_proj": 3.0}})
    up, down = "layers.0.mlp.up_proj", "layers.0.mlp.down_proj"
    assert torch.allclose(mixed.z[up], 0.5 * a.z[up] + 0.5 * b.z[up])
    assert torch.allclose(mixed.z[down], 0.75 * a.z[down] + 0.25 * b.z[down])


@pytest.mark.parametrize(
    "experts, weights, kwargs, message",
    [
        ([], [], {}, "nothing to mix"),
        (["a", "b"], [0.5, -0.1], {}, "≥ 0"),
        (["a", "b"], [0.0, 0.0], {}, "all mixing weights are zero"),
        (["a", "b"], [0.5, float("nan")], {}, "finite"),
        (["a", "a"], [0.5, 0.5], {}, "appears twice"),
        (["a", "other-base"], [0.5, 0.5], {}, "share one base model"),
        (["a", "b"], [0.5, 0.5], {"per_layer": {"zzz": {}}}, "not in the mix"),
        (["a", "b"], [0.5, 0.5], {"per_layer": {"a": {"nope": 1.0}}}, "unknown matrix"),
    ],
)
def test_mix_errors(experts, weights, kwargs, message):
    pool = {"a": make("a", 1), "b": make("b", 2), "other-base": make("other-base", 3, fingerprint="b" * 32)}
    with pytest.raises(MixError, match=message):
        mix([pool[n] for n in experts], weights, name="m", **kwargs)
