"""The Typer layer end to end on a tiny random model saved as a local HF directory."""

import json

import pytest
import torch
from typer.testing import CliRunner

from t2cli.cli.app import app
from t2cli.cli.completions import SHELLS, completion_script
from t2cli.expert import ExpertVector
from t2cli.models import load_model
from t2cli.registry import Registry
from t2cli.svd_store import open_store

runner = CliRunner()


@pytest.fixture
def model_dir(tmp_path, llama):
    directory = tmp_path / "tiny-model"
    llama.model.save_pretrained(directory)
    llama.tokenizer.save_pretrained(directory)
    return directory


def run(*args):
    result = runner.invoke(app, [str(a) for a in args], env={"COLUMNS": "250"})
    return result.exit_code, result.output


def register_random(model_dir, name, domain, seed):
    loaded = load_model(str(model_dir), device="cpu")
    store = open_store(loaded, ["mlp"])
    generator = torch.Generator().manual_seed(seed)
    z = {n: torch.rand(r, generator=generator) for n, r in store.ranks.items()}
    expert = ExpertVector(z, name, loaded.name, loaded.fingerprint, ["mlp"], domain=domain)
    Registry().add(expert)
    return expert


def test_decompose_info_and_errors(model_dir):
    code, out = run("decompose", model_dir)
    assert code == 0, out
    assert "matrices" in out and "decomposed" in out
    code, out = run("decompose", model_dir)
    assert code == 0 and "reused" in out
    code, out = run("info", model_dir, "--targets", "all")
    assert code == 0, out
    assert "LoRA rank 16" in out and "gate_proj" in out and "q_proj" in out
    code, out = run("decompose", model_dir, "--targets", "lm_head")
    assert code == 2 and "never adapts" in out
    code, out = run("decompose", "./no/such/model")
    assert code == 2 and "not found" in out


def test_mix_command_equals_hand_computed_sum(model_dir):
    assert run("decompose", model_dir)[0] == 0
    math_expert = register_random(model_dir, "math", "math", 1)
    code_expert = register_random(model_dir, "code", "code", 2)
    code, out = run("mix", "math:0.6", "code:0.4", "--name", "blend", "--model", model_dir)
    assert code == 0, out
    blend = Registry().load("blend", model_dir.name)
    for n in math_expert.z:
        assert torch.allclose(blend.z[n], 0.6 * math_expert.z[n] + 0.4 * code_expert.z[n])
    assert blend.provenance["recipe"]["experts"] == ["math", "code"]
    assert blend.provenance["recipe"]["weights"] == [0.6, 0.4]

    code, out = run("mix", "math:0.6", "nope:0.4", "--name", "x", "--model", model_dir)
    assert code == 2 and "no expert named 'nope'" in out
    code, out = run("mix", "math:-1", "code:0.4", "--name", "x", "--model", model_dir)
    assert code == 2 and "≥ 0" in out
    code, out = run("mix", "math:0", "code:0", "--name", "x", "--model", model_dir)
    assert code == 2 and "zero" in out
    code, out = run("mix", "math", "--name", "x", "--model", model_dir)
    assert code == 2 and "NAME:WEIGHT" in out


def test_mix_per_layer_file(model_dir, tmp_path):
    assert run("decompose", model_dir)[0] == 0
    a = register_random(model_dir, "a", "math", 1)
    b = register_random(model_dir, "b", "code", 2)
    module = next(iter(a.z))
    per_layer = tmp_path / "alphas.json"
    per_layer.write_text(json.dumps({"b": {module: 0.0}}))
    code, out = run("mix", "a:0.5", "b:0.5", "--name", "pl", "--per-layer", per_layer, "--model", model_dir)
    assert code == 0, out
    mixed = Registry().load("pl", model_dir.name)
    assert torch.allclose(mixed.z[module], 0.5 * a.z[module])
    other = list(a.z)[1]
    assert torch.allclose(mixed.z[other], 0.5 * a.z[other] + 0.5 * b.z[other])


def test_experts_commands(model_dir, tmp_path):
    assert run("decompose", model_dir)[0] == 0
    register_random(model_dir, "math", "math", 1)
    code, out = run("experts", "list", "--model", model_dir)
    assert code == 0 and "math" in out
    code, out = run("experts", "show", "math", "--model", model_dir)
    assert code == 0 and '"format_version": 1' in out
    code, out = run("experts", "export", "math", tmp_path / "out", "--model", model_dir)
    assert code == 0, out
    code, out = run("experts", "import", tmp_path / "out", "--name", "math2")
    assert code == 0 and "math2" in out
    code, out = run("experts", "rm", "math2", "--model", model_dir, "--yes")
    assert code == 0
    code, out = run("experts", "show", "math2", "--model", model_dir)
    assert code == 2 and "no expert named" in out
    (tmp_path / "broken").mkdir()
    code, out = run("experts", "import", tmp_path / "broken")
    assert code == 2 and "is missing" in out


def test_experts_json_and_a_broken_expert(model_dir):
    assert run("decompose", model_dir)[0] == 0
    register_random(model_dir, "math", "math", 1)
    register_random(model_dir, "code", "code", 2)
    code, out = run("experts", "list", "--model", model_dir, "--json")
    assert code == 0 and [e["name"] for e in json.loads(out)] == ["code", "math"]
    code, out = run("experts", "show", "math", "--model", model_dir, "--json")
    assert code == 0 and json.loads(out)["meta"]["domain"] == "math"
    meta_path = Registry().find("code", model_dir.name).path / "expert.json"
    meta = json.loads(meta_path.read_text())
    meta["provenance"] = "trained"
    meta_path.write_text(json.dumps(meta))
    code, out = run("experts", "list", "--model", model_dir)
    assert code == 0 and "broken" in out and "math" in out and "Traceback" not in out
    code, out = run("experts", "list", "--model", model_dir, "--json")
    assert code == 0 and "'provenance' must be a JSON object" in json.loads(out)[0]["error"]
    assert run("experts", "show", "math", "--model", model_dir)[0] == 0  # a healthy neighbour still shows
    code, out = run("experts", "show", "code", "--model", model_dir)
    assert code == 2 and "'provenance' must be a JSON object" in out and len(out.strip().splitlines()) == 1
    code, out = run("mix", "math:0.5", "code:0.5", "--name", "m", "--model", model_dir)
    assert code == 2 and "'provenance'" in out
    code, out = run("eval", "--task", "arc-easy", "--model", model_dir, "--expert", "code", "--limit", "1")
    assert code == 2 and "'provenance'" in out


def test_demo_applies_registered_experts_and_reverts(model_dir):
    assert run("decompose", model_dir)[0] == 0
    register_random(model_dir, "math", "math", 1)
    register_random(model_dir, "code", "code", 2)
    code, out = run("demo", "--model", model_dir, "--max-new-tokens", "3", "--adapt", "loglik")
    assert code == 0, out
    assert "demo-mixture" in out and "bit-identical" in out and "validation" in out
    assert "Self-adaptive answers (pass 1: loglik)" in out and "Tom has 3 boxes" in out
    code, out = run("demo", "--model", model_dir, "--max-new-tokens", "3", "--adapt", "cls")
    assert code == 2 and "no classification expert" in out  # cls needs the dispatch classifier
    code, out = run("demo", "--model", model_dir, "--max-new-tokens", "3")  # the default: loglik-cls if it can
    assert code == 0 and "No dispatch classifier registered" in out and "(pass 1: loglik)" in out, out


def test_train_then_save_the_best_so_far_of_the_run(model_dir, tmp_path):
    args = ("train", "--task", "gsm8k", "--model", model_dir, "--iters", "2", "-b", "2", "--val-limit", "2")
    args += ("--eval-every", "1", "--max-new-tokens", "4", "--objective", "sft", "--out", tmp_path / "run")
    code, out = run(*args, "--name", "math")
    assert code == 0 and "Trained expert math" in out, out
    code, out = run(*args, "--name", "math-so-far", "--resume", "--save-best")
    assert code == 0 and "Saved the best so far: expert math-so-far" in out and "2 of 2" in out, out
    assert "budget:" not in out  # nothing is trained
    assert Registry().find("math-so-far", model_dir.name).path.is_dir()


@pytest.mark.parametrize("shell", sorted(SHELLS))
def test_completion_scripts_are_in_sync_with_the_app(shell):
    from pathlib import Path

    shipped = Path(__file__).resolve().parents[2] / "completions" / SHELLS[shell]
    assert shipped.read_text() == completion_script(shell), "run `python -m t2cli.cli.completions`"


def test_help_and_completion_do_not_import_torch():
    """`t2 --help` and Tab completion only build the command tree: the library (torch,
    transformers) is imported when a command runs, so they answer at once."""
    import subprocess
    import sys

    code = "import sys, t2cli.cli.app; print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


# --------------------------------------------------------------------------- bad input: one line, exit 2

BAD_INPUTS = [
    ("eval", "--task", "gsm8k", "--limit", "0"),
    ("eval", "--task", "gsm8k", "--limit", "-3"),
    ("eval", "--task", "gsm8k", "--max-new-tokens", "0"),
    ("eval", "--task", "gsm8k", "--batch-size", "0"),
    ("eval", "--task", "gsm8k", "--temperature", "-1"),
    ("eval", "--task", "gsm8k", "--temperature", "nan"),
    ("eval", "--task", "gsm8k", "--top-p", "1.5"),
    ("eval", "--task", "gsm8k", "--pass1-tokens", "0"),
    ("eval", "--task", "gsm8k", "--cem-generations", "0"),
    ("eval", "--task", "gsm8k", "--limit", "many"),
    ("eval", "--limit", "3"),
    ("chat", "--cache-size", "0"),
    ("chat", "--max-new-tokens", "0"),
    ("chat", "--population", "1"),
    ("chat", "--generations", "0"),
    ("demo", "--max-new-tokens", "0"),
    ("demo", "--adapt", "cem"),
    ("eval", "--task", "gsm8k", "--pass1-dtype", "float8"),
    ("decompose", "--svd-dtype", "float16"),
    ("decompose", "--force", "true"),
    ("info", "false"),
    ("info", "--memory", "--batch-size", "0"),
    ("info", "--memory", "--gpu-memory", "-8"),
    ("train", "--task", "gsm8k", "--iters", "0"),
    ("train", "--task", "gsm8k", "--batch-size", "0"),
    ("train", "--task", "gsm8k", "--temperature", "-1"),
    ("train", "--task", "gsm8k", "--save-best"),  # a run's best so far comes from its checkpoint: --resume
    ("export", "math", "--merged", "out", "--dtype", "int8"),
    ("eval", "--task", "[/]"),  # user text in an error message is text, not rich markup
    ("eval", "--task", "gsm8k", "--out", __file__),  # a file where the report directory goes
    ("eval", "--task", "gsm8k", "--resume"),  # continues the run in an --out directory
    ("eval", "--task", "gsm8k", "--resume", "--out", "runs/none", "--sample"),
    ("eval", "--task", "gsm8k", "--resume", "--out", "runs/none"),  # nothing there to resume
    ("score", "--task", "gsm8k", "--predictions", __file__, "--out", "/"),
    ("evl",),
]


@pytest.mark.parametrize("args", BAD_INPUTS, ids=" ".join)
def test_bad_input_is_one_line_and_exit_2(args, monkeypatch):
    import t2cli.models

    def no_model_load(*_args, **_kwargs):
        raise AssertionError("a bad option must be refused before any model is loaded")

    monkeypatch.setattr(t2cli.models, "load_model", no_model_load)
    code, out = run(*args)
    lines = [line for line in out.splitlines() if line.strip()]
    assert code == 2, out
    assert len(lines) == 1 and lines[0].startswith("error:"), out
    assert "Traceback" not in out


def test_every_rule_names_an_option_of_its_command():
    from t2cli.cli import app as app_module
    from t2cli.cli.validate import RULES, checked

    commands = {
        name: getattr(app_module, f"{name}_command") for name in ("eval", "chat", "demo", "decompose", "info", "export")
    }
    assert set(RULES) <= set(commands)
    for name in RULES:
        checked(name, commands[name])  # raises KeyError for a rule naming a missing option
    with pytest.raises(KeyError, match="not an option"):
        RULES["demo"]["no_such_option"] = RULES["demo"]["max_new_tokens"]
        try:
            checked("demo", commands["demo"])
        finally:
            del RULES["demo"]["no_such_option"]


def test_range_bounds_and_messages():
    from t2cli.cli.validate import AT_LEAST_1, POSITIVE, PROBABILITY, Range

    assert AT_LEAST_1.accepts(1) and not AT_LEAST_1.accepts(0)
    assert POSITIVE.accepts(1e-9) and not POSITIVE.accepts(0) and not POSITIVE.accepts(float("inf"))
    assert PROBABILITY.accepts(1.0) and not PROBABILITY.accepts(0.0)
    assert Range(0, 1, high_open=True).describe() == "in [0, 1)"
    assert AT_LEAST_1(None) is None  # an unset optional value passes


def test_version():
    code, out = run("--version")
    assert code == 0 and out.startswith("t2 ")


def test_a_bert_directory_is_refused_as_a_causal_lm(tmp_path):
    from transformers import BertConfig, BertModel

    bert = tmp_path / "bert"
    config = BertConfig(vocab_size=64, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=24)
    BertModel(config).save_pretrained(bert)
    code, out = run("eval", "--task", "arc-easy", "--model", bert, "--limit", "1")
    assert code == 2 and "not a causal language model" in out, out
    assert out.strip().count("\n") == 0, out


def test_piped_output_is_not_cut_at_80_columns(monkeypatch):
    from t2cli.cli.output import PIPED_WIDTH, console_width

    monkeypatch.delenv("COLUMNS", raising=False)
    monkeypatch.setattr("sys.stdout.isatty", lambda: False)
    assert console_width() == PIPED_WIDTH
    monkeypatch.setattr("sys.stdout.isatty", lambda: True)
    assert console_width() is None


def test_info_json_is_one_document(model_dir):
    result = runner.invoke(app, ["info", str(model_dir), "--json"])
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert document["architecture"]["class"] == "LlamaForCausalLM"
    assert document["targets"]["matrices"] == 6 and document["parameters"]["svf"] > 0


# --------------------------------------------------------------------------- chat


def chat(model_dir, text, *options):
    result = runner.invoke(
        app, ["chat", "--model", str(model_dir), "--max-new-tokens", "4", *options], input=text, env={"COLUMNS": "250"}
    )
    return result.exit_code, result.output


def test_chat_prints_markup_literally_and_answers_slash_commands(model_dir):
    text = "[bold]hi[/] and [/]\n/help\n/experts\n/expert nope\n/foo\n/clear\nsecond\n/quit\nnever read\n"
    code, out = chat(model_dir, text, "--adapt", "none")
    assert code == 0, out
    assert "you> [bold]hi[/] and [/]" in out  # the user's text, not rich markup
    assert out.count("t2> ") == 2  # two prompts answered: commands are not prompts
    assert "/expert NAME|auto" in out  # /help
    assert "no experts are registered" in out  # /experts
    assert "--adapt none" in out  # /expert NAME without experts
    assert "unknown command /foo" in out and "/help lists the commands" in out
    assert "conversation cleared" in out and "never read" not in out


def test_chat_expert_command_fixes_the_expert_and_auto_undoes_it(model_dir):
    assert run("decompose", model_dir)[0] == 0
    register_random(model_dir, "math", "math", 1)
    text = "/experts\n/expert math\nwhat?\n/expert auto\nagain\n/expert missing\n"
    code, out = chat(model_dir, text, "--adapt", "fixed:math")
    assert code == 0, out
    assert "math  [math]" in out
    assert "answering with math until /expert auto" in out
    assert "expert: math (/expert)" in out and "pass 1 chooses the expert again" in out
    assert "no expert named 'missing'" in out  # one line, and the session went on to the end of input
    assert out.count("t2> ") == 2


def test_ctrl_c_during_an_answer_stops_that_answer_not_the_session(model_dir, monkeypatch):
    from t2cli.serve.engine import Engine

    real_stream = Engine.stream
    calls = []

    def interrupted_once(engine, prompt_ids, sampling, adaptation, on_text=None, user_text=""):
        calls.append(engine.tokenizer.decode(prompt_ids))
        if len(calls) == 1:  # Ctrl-C as the first answer's text comes: the engine cancels it

            def interrupt(text):
                raise KeyboardInterrupt

            return real_stream(engine, prompt_ids, sampling, adaptation, interrupt, user_text)
        return real_stream(engine, prompt_ids, sampling, adaptation, on_text, user_text)

    monkeypatch.setattr(Engine, "stream", interrupted_once)
    code, out = chat(model_dir, "first\nsecond\n", "--adapt", "none")
    assert code == 0, out
    assert "answer stopped" in out and len(calls) == 2
    assert "first" in calls[0] and "first" not in calls[1]  # the stopped turn is not kept in the conversation
