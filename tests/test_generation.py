import torch

from t2cli.generation import GenerationConfig, chat_prompt, cut_at_stop, generate


def test_cut_at_stop():
    assert cut_at_stop("abc STOP def", ["STOP"]) == "abc "
    assert cut_at_stop("a\n\nQ: b", ["Q:", "\n\n"]) == "a"
    assert cut_at_stop("nothing", ["zzz"]) == "nothing"


def test_chat_prompt_uses_template_or_plain_text(tokenizer):
    text = chat_prompt(tokenizer, [{"role": "user", "content": "hi"}])
    assert text == "<|user|>hi</s><|assistant|>"

    class Plain:
        chat_template = None

    assert chat_prompt(Plain(), [{"role": "user", "content": "hi"}]) == "hi\n\n"


def test_batched_greedy_equals_one_by_one_and_keeps_order(llama):
    prompts = ["The answer is", "What is the capital of France? The answer is (A).", "1 + 2 ="]
    config = GenerationConfig(max_new_tokens=6, batch_size=3)
    batched = generate(llama, prompts, config)
    single = [generate(llama, [p], GenerationConfig(max_new_tokens=6, batch_size=1))[0] for p in prompts]
    assert [c.completion_ids for c in batched] == [c.completion_ids for c in single]
    assert all(
        c.prompt_ids == llama.tokenizer(p, add_special_tokens=False)["input_ids"] for c, p in zip(batched, prompts)
    )


def test_progress_and_sampling_seed(llama):
    seen = []
    config = GenerationConfig(max_new_tokens=5, batch_size=2, do_sample=True, seed=3)
    first = generate(llama, ["a", "b", "c"], config, progress=lambda d, t, n: seen.append((d, t)))
    second = generate(llama, ["a", "b", "c"], config)
    assert seen == [(2, 3), (3, 3)]
    assert [c.text for c in first] == [c.text for c in second]


def test_stop_strings_cut_the_text(llama):
    out = generate(llama, ["The answer is"], GenerationConfig(max_new_tokens=8))[0]
    assert len(out.text) > 2  # 8 tokens of a random model: some text to cut
    marker = out.text[1:3]
    stopped = generate(llama, ["The answer is"], GenerationConfig(max_new_tokens=8, stop=(marker,)))[0]
    assert marker not in stopped.text and out.text.startswith(stopped.text)
    assert torch.is_grad_enabled()  # generate's no_grad does not leak


def test_stream_passes_the_text_on_as_generated_and_equals_generate(llama):
    from t2cli.generation import stream

    config = GenerationConfig(max_new_tokens=10)
    pieces = []
    streamed = stream(llama, "The answer is", pieces.append, config)
    plain = generate(llama, ["The answer is"], config)[0]
    assert streamed.completion_ids == plain.completion_ids
    assert len(pieces) >= 1 and "".join(pieces) == plain.text


def test_stream_stops_where_the_callback_interrupts(llama):
    import pytest

    from t2cli.generation import stream

    def interrupt(_text):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        stream(llama, "The answer is", interrupt, GenerationConfig(max_new_tokens=20))


def test_on_batch_hands_over_each_finished_batch_in_the_callers_indices(llama):
    prompts = ["a", "The answer is (A).", "1 + 2 =", "b c"]
    seen = []
    results = generate(
        llama,
        prompts,
        GenerationConfig(max_new_tokens=3, batch_size=3),
        on_batch=lambda indices, done: seen.append((indices, done)),
    )
    assert [len(indices) for indices, _ in seen] == [3, 1]
    assert sorted(i for indices, _ in seen for i in indices) == [0, 1, 2, 3]
    for indices, done in seen:
        assert [results[i] for i in indices] == done


def test_an_answer_the_budget_ends_is_marked_cut_off(llama):
    eos = llama.tokenizer.eos_token_id
    long = generate(llama, ["The answer is"], GenerationConfig(max_new_tokens=8))[0]
    assert eos not in long.completion_ids  # a random tiny model does not stop by itself
    assert long.cut_off and long.num_new_tokens == 8
    marker = long.text[1:3]
    stopped = generate(llama, ["The answer is"], GenerationConfig(max_new_tokens=8, stop=(marker,)))[0]
    assert not stopped.cut_off  # a stop string ended it
    llama.model.generation_config.eos_token_id = long.completion_ids[2]
    llama.tokenizer.eos_token = llama.tokenizer.convert_ids_to_tokens(long.completion_ids[2])
    try:
        ended = generate(llama, ["The answer is"], GenerationConfig(max_new_tokens=8))[0]
        assert ended.completion_ids[-1] == long.completion_ids[2] and not ended.cut_off
    finally:
        llama.tokenizer.eos_token = llama.tokenizer.convert_ids_to_tokens(eos)
        llama.model.generation_config.eos_token_id = eos
