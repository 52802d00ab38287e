import json
import multiprocessing
import os
import shutil
import signal
import time
from pathlib import Path, PurePosixPath

import pytest
import torch

from t2cli.errors import ExpertError, RegistryError
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


# --------------------------------------------------------------------------- broken metadata


def test_a_broken_entry_is_listed_with_its_error_and_hides_nothing(registry):
    registry.add(make("math"))
    registry.add(make("code", domain="code"))
    meta_path = registry.write_root / "tiny" / "code" / "expert.json"
    meta_path.write_text(meta_path.read_text().replace('"targets": [\n    "mlp"\n  ]', '"targets": 5'))
    entries = {entry.name: entry for entry in registry.list("tiny")}
    assert "'targets' must be a JSON list" in entries["code"].error and entries["code"].meta == {}
    assert entries["math"].error is None and registry.load("math", "tiny").name == "math"
    with pytest.raises(ExpertError, match="'targets'"):
        registry.load("code", "tiny")


# --------------------------------------------------------------------------- concurrent and killed writers


def constant(name, value, size=4):
    return ExpertVector({"m.up": torch.full((size,), value)}, name, "tiny", "a" * 32, ["mlp"])


def _register(root, value, barrier, results):
    barrier.wait()
    try:
        Registry(roots=[root], write_root=root).add(constant("same", value))
        results.put(("ok", value))
    except (RegistryError, ExpertError) as error:
        results.put(("lost", str(error)))


def test_two_writers_of_one_name_one_wins_the_other_gets_one_clear_error(tmp_path):
    context = multiprocessing.get_context("fork")
    registry = Registry(roots=[tmp_path], write_root=tmp_path)
    for _ in range(3):
        barrier, results = context.Barrier(2), context.Queue()
        workers = [context.Process(target=_register, args=(tmp_path, v, barrier, results)) for v in (0.25, 0.75)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(30)
        outcomes = sorted(results.get(timeout=5) for _ in workers)
        assert [kind for kind, _ in outcomes] == ["lost", "ok"]
        assert "already exists" in outcomes[0][1] and "\n" not in outcomes[0][1]
        assert torch.equal(registry.load("same", "tiny").z["m.up"], torch.full((4,), outcomes[1][1]))
        registry.remove("same", "tiny")


def _overwrite_forever(root, value):
    registry = Registry(roots=[root], write_root=root)
    while True:
        registry.add(constant("same", value, size=200_000), overwrite=True)


def test_a_reader_sees_the_old_or_the_new_expert_and_kill_9_loses_neither(tmp_path):
    context = multiprocessing.get_context("fork")
    registry = Registry(roots=[tmp_path], write_root=tmp_path)
    registry.add(constant("same", 0.5, size=200_000))
    for trial in range(3):
        writers = [context.Process(target=_overwrite_forever, args=(tmp_path, v)) for v in (0.25, 0.75)]
        for writer in writers:
            writer.start()
        deadline = time.monotonic() + 0.3 + 0.2 * trial
        while time.monotonic() < deadline:  # concurrent reads: always one whole expert
            assert registry.load("same", "tiny").z["m.up"].unique().numel() == 1
        for writer in writers:
            os.kill(writer.pid, signal.SIGKILL)
            writer.join()
        value = registry.load("same", "tiny").z["m.up"].unique()
        assert value.numel() == 1 and float(value) in (0.25, 0.5, 0.75)
    assert sorted(p.name for p in (tmp_path / "tiny").iterdir()) == [".same.lock", "same"]


@pytest.mark.parametrize("state", ["old-aside-only", "old-aside-and-new", "staging-left"])
def test_what_a_killed_writer_left_is_rolled_back_or_forward_on_next_access(tmp_path, state):
    registry = Registry(roots=[tmp_path], write_root=tmp_path)
    registry.add(constant("same", 0.5))
    folder = tmp_path / "tiny"
    if state == "old-aside-only":  # killed between "old aside" and "new in"
        os.rename(folder / "same", folder / ".same.old")
    elif state == "old-aside-and-new":  # killed while deleting the old one
        shutil.copytree(folder / "same", folder / ".same.old")
        constant("same", 0.75).save(folder / "new")
        shutil.rmtree(folder / "same")
        os.rename(folder / "new", folder / "same")
        (folder / ".same.old" / "expert.json").unlink()
    else:  # killed while writing the new one
        (folder / ".same.new-x").mkdir()
        (folder / ".same.new-x" / "expert.safetensors").write_bytes(b"half")
    expected = 0.75 if state == "old-aside-and-new" else 0.5
    assert [e.name for e in registry.list("tiny")] == ["same"]
    assert float(registry.load("same", "tiny").z["m.up"][0]) == expected
    assert sorted(p.name for p in folder.iterdir()) == [".same.lock", "same"]


def test_a_writer_waiting_past_the_timeout_gets_one_clear_error(tmp_path):
    from filelock import FileLock

    context = multiprocessing.get_context("fork")
    (tmp_path / "tiny").mkdir()
    ready, done = context.Event(), context.Event()

    def hold():
        with FileLock(tmp_path / "tiny" / ".same.lock"):
            ready.set()
            done.wait(30)

    holder = context.Process(target=hold)
    holder.start()
    try:
        ready.wait(30)
        with pytest.raises(RegistryError, match="being written by another t2 process") as info:
            Registry(roots=[tmp_path], write_root=tmp_path, lock_timeout=0.2).add(constant("same", 0.5))
        assert "\n" not in str(info.value)
    finally:
        done.set()
        holder.join()


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write anywhere")
def test_a_read_only_registry_is_read_without_a_lock_and_writes_say_why(tmp_path):
    registry = Registry(roots=[tmp_path], write_root=tmp_path)
    registry.add(constant("same", 0.5))
    (tmp_path / "tiny" / ".same.lock").unlink()
    os.chmod(tmp_path / "tiny", 0o555)
    try:
        assert float(registry.load("same", "tiny").z["m.up"][0]) == 0.5
        with pytest.raises(RegistryError, match="must be writable"):
            registry.add(constant("same", 0.25), overwrite=True)
    finally:
        os.chmod(tmp_path / "tiny", 0o755)


def test_shipped_experts_record_no_machine_specific_path():
    """A recorded data source names the bundled file relative to the package (or the data
    directory option), so an expert trained on one machine says nothing about its file system."""
    shipped = Path(__file__).resolve().parent.parent / "registry"
    records = sorted(shipped.glob("*/*/expert.json"))
    assert records, "no shipped expert found under registry/"
    for record in records:
        source = json.loads(record.read_text()).get("provenance", {}).get("data_source", "")
        parts = [part.split(" (")[-1].rstrip(")") for part in source.split("; ")]
        assert not any(PurePosixPath(part).is_absolute() for part in parts), f"{record}: {source}"
