"""The one loop reproduces the runs pinned before SVF and LoRA shared it: bit-identical z and LoRA
weights, the same metrics (see reference_runs.py for the cases and how the file was made)."""

from contextlib import contextmanager

import pytest
import torch
from reference_runs import CASES, REFERENCE, run_case
from toy import one_thread  # noqa: F401 (an autouse fixture)


def assert_same(got: dict, expected: dict, parts=("final", "best")) -> None:
    for part in parts:
        assert set(got[part]) == set(expected[part]), part
        for name, tensor in expected[part].items():
            assert torch.equal(got[part][name], tensor), (part, name)
    # the loop logs more than the old LoRA loop did (completion/tokens, time/rollout): compare its keys
    assert [{k: line[k] for k in old} for line, old in zip(got["metrics"], expected["metrics"], strict=True)] == (
        expected["metrics"]
    )


@pytest.mark.parametrize("case", [case for case, settings in CASES.items() if settings.get("method") != "lora"])
def test_svf_runs_are_bit_identical_to_the_reference(case, tmp_path):
    assert_same(run_case(case, tmp_path), torch.load(REFERENCE, weights_only=True)[case])


def test_lora_run_is_bit_identical_when_the_old_dropout_draw_is_replayed(tmp_path, monkeypatch):
    """The one change: the old LoRA loop validated the base model while PEFT's dropout modules were
    still in training mode (PEFT creates them so). Outputs were unchanged (B = 0), but generation drew
    dropout masks from torch's RNG, which shifted every training mask after it. The method now keeps
    that dropout off outside the loss; replaying the old draw gives the reference bit for bit."""
    pytest.importorskip("peft")
    from t2cli.train.lora import LoraMethod, _set_dropout

    @contextmanager
    def old_base_validation(self, base=False):
        _set_dropout(self.peft_model, base)  # base validation: dropout on, with the adapter attached (B = 0)
        try:
            yield
        finally:
            _set_dropout(self.peft_model, False)

    monkeypatch.setattr(LoraMethod, "generation_weights", old_base_validation)
    assert_same(run_case("lora-sft", tmp_path), torch.load(REFERENCE, weights_only=True)["lora-sft"])


def test_lora_run_without_the_replay_starts_identically(tmp_path):
    """Same initial A (the saved best: no validation beat B = 0) and the same first loss."""
    pytest.importorskip("peft")
    expected = torch.load(REFERENCE, weights_only=True)["lora-sft"]
    got = run_case("lora-sft", tmp_path)
    for name, tensor in expected["best"].items():
        assert torch.equal(got["best"][name], tensor), name
    assert got["metrics"][0]["loss"] == expected["metrics"][0]["loss"]
    assert not torch.equal(got["final"][next(iter(got["final"]))], expected["final"][next(iter(got["final"]))])
