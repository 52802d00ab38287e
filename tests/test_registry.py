import pytest
import torch

from t2cli.errors import RegistryError
from t2cli.expert import ExpertVector
from t2cli.registry import Registry, model_card


def make(name, base="tiny", domain="math"):
    z = {"m.up": torch.rand(4), "m.down": torch.rand(3)}
    return ExpertVector(z, name, base, "a" * 32, ["mlp"], domain=domain, provenance={"task": "gsm8k", "metrics": {}})


@pytest.fixture
def registry(tmp_path):
    shipped = tmp_path / "shipped"
    make("reasoning", domain="reasoning").save(shipped / "tiny" / "reasoning")
    return Registry(roots=[tmp_path / "user", shipped], write_root=tmp_path / "user")


def test_add_list_find_load_remove(registry):
    registry.add(make("math"))
    names = [(e.base_model, e.name, e.domain) for e in registry.list()]
    assert names == [("tiny", "math", "math"), ("tiny", "reasoning", "reasoning")]
    assert registry.list("other") == []
    assert torch.equal(registry.load("math", "tiny").z["m.up"], registry.load("math", "tiny").z["m.up"])
    with pytest.raises(RegistryError, match="already exists"):
        registry.add(make("math"))
    registry.add(make("math"), overwrite=True)
    registry.remove("math", "tiny")
    assert [e.name for e in registry.list()] == ["reasoning"]


def test_shipped_experts_are_read_only_and_unknown_names_are_clear(registry):
    with pytest.raises(RegistryError, match="read-only"):
        registry.remove("reasoning", "tiny")
    with pytest.raises(RegistryError, match="no expert named 'nope'.*known: reasoning"):
        registry.find("nope", "tiny")
    with pytest.raises(RegistryError, match="invalid expert name"):
        registry.add(make("../escape"))


def test_import_export(registry, tmp_path):
    make("code", domain="code").save(tmp_path / "outside")
    entry = registry.import_dir(tmp_path / "outside", name="code2")
    assert entry.name == "code2" and entry.path.parent.parent == tmp_path / "user"
    registry.export("code2", "tiny", tmp_path / "exported")
    assert ExpertVector.load(tmp_path / "exported").name == "code2"
    with pytest.raises(RegistryError, match="not empty"):
        registry.export("code2", "tiny", tmp_path / "exported")


class FakeHubApi:
    """Stands in for huggingface_hub.HfApi: records calls, keeps uploaded folders, no network."""

    def __init__(self, store):
        self.store = store
        self.calls = []

    def create_repo(self, repo_id, repo_type, private, exist_ok):
        self.calls.append(("create_repo", repo_id, private))

    def upload_folder(self, repo_id, folder_path, repo_type, commit_message):
        import shutil

        self.calls.append(("upload_folder", repo_id, commit_message))
        shutil.copytree(folder_path, self.store / repo_id, dirs_exist_ok=True)


def test_push_then_pull_round_trip(registry, tmp_path):
    registry.add(make("math"))
    hub = tmp_path / "hub"
    api = FakeHubApi(hub)
    url = registry.push("me/experts", "tiny", api=api)
    assert url.endswith("me/experts")
    assert [c[0] for c in api.calls] == ["create_repo", "upload_folder"]
    assert (hub / "me/experts/tiny/math/expert.safetensors").is_file()
    card = (hub / "me/experts/README.md").read_text()
    assert "| math | math | gsm8k |" in card and "t2 experts pull me/experts" in card

    def fake_download(repo_id, local_dir, token, allow_patterns):
        import shutil

        shutil.copytree(hub / repo_id, local_dir, dirs_exist_ok=True)

    other = Registry(roots=[tmp_path / "user2"], write_root=tmp_path / "user2")
    pulled = other.pull("me/experts", download=fake_download)
    assert sorted(e.name for e in pulled) == ["math", "reasoning"]


def test_hub_failures_say_network_is_needed(registry, monkeypatch):
    """With the network disabled, the real huggingface_hub API layer fails; t2 says why in one line."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(RegistryError, match="needs network"):
        registry.pull("me/nothing")

    class Offline(FakeHubApi):
        def create_repo(self, **kwargs):
            raise ConnectionError("network disabled")

    with pytest.raises(RegistryError, match="needs network"):
        registry.push("me/experts", "tiny", api=Offline(None))


def test_pull_refuses_a_corrupt_expert(registry, tmp_path):
    def fake_download(repo_id, local_dir, token, allow_patterns):
        make("bad").save(f"{local_dir}/tiny/bad")
        with open(f"{local_dir}/tiny/bad/expert.safetensors", "ab") as handle:
            handle.write(b"junk")

    with pytest.raises(RegistryError, match="does not match the hash"):
        registry.pull("me/bad", download=fake_download)
    assert [e.name for e in registry.list()] == ["reasoning"]


def test_model_card_lists_metrics(registry):
    entry = registry.list()[0]
    assert "reasoning" in model_card("me/x", "tiny", [entry])
