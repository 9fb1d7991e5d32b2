"""The local simulated model: deterministic, prompt-derived answers of a chosen length."""

from __future__ import annotations

from typing import Any

import pytest

from local import simulated_model as model
from local.simulated_model import InvalidRequest, request_for_prompt


def conversation(*turns: str, system: str | None = None) -> dict[str, Any]:
    roles = ("user", "assistant")
    body: dict[str, Any] = {
        "messages": [
            {"role": roles[i % 2], "content": [{"text": text}]} for i, text in enumerate(turns)
        ]
    }
    if system is not None:
        body["system"] = [{"text": system}]
    return body


def test_same_prompt_gives_the_same_answer() -> None:
    assert model.answer_text(request_for_prompt("hello")) == model.answer_text(
        request_for_prompt("hello")
    )


def test_different_prompts_give_different_answers() -> None:
    assert model.answer_text(request_for_prompt("hello")) != model.answer_text(
        request_for_prompt("goodbye")
    )


def test_the_answer_depends_only_on_the_last_user_message() -> None:
    alone = model.answer_text(conversation("what next?"))
    in_context = model.answer_text(conversation("hi", "hello!", "what next?", system="be brief"))

    assert alone == in_context


def test_default_length_is_120_tokens() -> None:
    generation = model.generate(request_for_prompt("hello"))

    assert generation.output_tokens == model.DEFAULT_ANSWER_TOKENS == 120
    assert generation.stop_reason == "end_turn"


def test_the_default_length_can_be_changed_by_the_caller() -> None:
    assert model.generate(request_for_prompt("hello"), default_tokens=7).output_tokens == 7


def test_tokens_directive_sets_the_answer_length() -> None:
    assert model.generate(request_for_prompt("explain [tokens=500]")).output_tokens == 500


def test_tokens_directive_zero_gives_an_empty_answer() -> None:
    generation = model.generate(request_for_prompt("say nothing [tokens=0]"))

    assert generation.text == ""
    assert generation.stop_reason == "end_turn"


def test_max_tokens_truncates_with_stop_reason_max_tokens() -> None:
    full = model.generate(request_for_prompt("hello"))
    cut = model.generate(request_for_prompt("hello", max_tokens=10))

    assert cut.output_tokens == 10
    assert cut.stop_reason == "max_tokens"
    assert cut.tokens == full.tokens[:10]


def test_max_tokens_above_the_answer_length_ends_the_turn() -> None:
    generation = model.generate(request_for_prompt("hello", max_tokens=4096))

    assert generation.stop_reason == "end_turn"
    assert generation.output_tokens == 120


def test_tokens_are_word_pieces_that_join_into_the_text() -> None:
    generation = model.generate(request_for_prompt("hello [tokens=300]"))

    assert "".join(generation.tokens) == generation.text
    assert not generation.tokens[0].startswith(" ")
    assert all(t for t in generation.tokens)
    assert sum(t.startswith(" ") for t in generation.tokens) > len(generation.tokens) // 2
    assert any(not t.startswith(" ") for t in generation.tokens[1:])  # a word split in two


def test_a_natural_answer_ends_with_a_full_stop() -> None:
    assert model.answer_text(request_for_prompt("hello")).endswith(".")


def test_long_answers_include_multibyte_characters() -> None:
    text = model.answer_text(request_for_prompt("hello [tokens=2000]"))

    assert any(ord(c) > 127 for c in text)


def test_usage_counts_about_a_quarter_of_the_input_characters() -> None:
    request = conversation("x" * 40, "y" * 20, "z" * 40, system="s" * 20)

    usage = model.usage(request)

    assert usage["inputTokens"] == 30  # 120 characters / 4
    assert usage["outputTokens"] == 120
    assert usage["totalTokens"] == 150


def test_prompt_hash_is_short_stable_and_not_the_prompt() -> None:
    digest = model.prompt_hash(request_for_prompt("my secret prompt"))

    assert digest == model.prompt_hash(request_for_prompt("my secret prompt"))
    assert len(digest) == 12
    assert "secret" not in digest


def test_a_valid_conversation_passes_validation() -> None:
    body = conversation("hi", "hello", "more", system="be brief")
    body["inferenceConfig"] = {"maxTokens": 10, "temperature": 0.5, "topP": 1}

    model.validate(body)


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ([], "JSON object"),
        ({"messages": []}, "at least one message"),
        ({"messages": [{"role": "assistant", "content": [{"text": "hi"}]}]}, "start with a user"),
        ({"messages": [{"role": "user", "content": [{"text": "hi"}]}] * 2}, "alternate"),
        ({"messages": [{"role": "user", "content": [{"text": "   "}]}]}, "blank"),
        ({"messages": [{"role": "user", "content": [{"image": {}}]}]}, "text content"),
        (request_for_prompt("hi") | {"inferenceConfig": {"maxTokens": 0}}, "maxTokens"),
        (request_for_prompt("hi") | {"inferenceConfig": {"temperature": 1.5}}, "temperature"),
    ],
    ids=[
        "not-an-object",
        "no-messages",
        "assistant-first",
        "two-user-turns",
        "blank-text",
        "non-text-block",
        "max-tokens-zero",
        "temperature-too-high",
    ],
)
def test_invalid_requests_are_rejected_with_a_reason(body: Any, fragment: str) -> None:
    with pytest.raises(InvalidRequest, match=fragment):
        model.validate(body)
