"""A pure, deterministic stand-in for a Bedrock model (the "local simulated model").

Given a Converse request body (``messages``, ``system``, ``inferenceConfig``) it
produces an answer as a list of tokens. The same request always gives the same
answer, and different last user messages give different answers, so end-to-end
tests can compute the exact expected text with :func:`answer_text`.

How the answer is made:

* The words come from a fixed vocabulary, chosen by a ``random.Random`` seeded
  with a SHA-256 of the text of the **last user message** (system prompt and
  earlier turns do not change the answer).
* Tokens are word pieces the way real models emit them: ``"Serverless"``,
  ``" streaming"``, ``" archi"``, ``"tecture."``. Each token after the first
  starts with a space unless it continues a word. A few vocabulary words are
  non-ASCII (``"naïve"``, ``"café"``, ``"🚀"``) so transports get multi-byte UTF-8.
* The natural length is ``default_tokens`` tokens (120 unless the caller says
  otherwise; the emulator's ``answerTokens`` setting feeds it).
* ``inferenceConfig.maxTokens`` truncates the answer: stop reason ``max_tokens``
  when the natural answer is longer, else ``end_turn``.

Directives a test may put anywhere in the last user message:

* ``[tokens=N]`` sets the natural answer length to ``N`` tokens (0..100000), for
  example ``"Explain streaming [tokens=500]"``. ``[tokens=0]`` gives an empty answer.

Usage: ``inputTokens`` is about a quarter of the input characters (system plus all
message texts, at least 1); ``outputTokens`` is the number of tokens emitted.
"""

from __future__ import annotations

import hashlib
import random
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

DEFAULT_ANSWER_TOKENS = 120
MAX_DIRECTIVE_TOKENS = 100_000
STOP_END_TURN = "end_turn"
STOP_MAX_TOKENS = "max_tokens"

_TOKENS_DIRECTIVE = re.compile(r"\[tokens=(\d+)\]")

_VOCABULARY: tuple[str, ...] = (
    "serverless", "streaming", "tokens", "latency", "Lambda", "Bedrock", "model",
    "response", "architecture", "WebSocket", "AppSync", "subscription", "queue",
    "frame", "client", "coalescing", "throughput", "connection", "gateway", "function",
    "the", "a", "of", "to", "and", "in", "is", "that", "with", "for", "each", "every",
    "when", "then", "while", "because", "so", "it", "this", "fast", "small", "reliable",
    "ordered", "buffered", "flushed", "cancelled", "resumed", "delivered", "measured",
    "concurrent", "interval", "sequence", "numbers", "heartbeat", "publish", "mutation",
    "naïve", "café", "über", "🚀",
)  # fmt: skip
# Weights keep the non-ASCII words rare, as in real prose, but present in every answer
# of ordinary length often enough to exercise UTF-8 handling.
_WEIGHTS: tuple[int, ...] = tuple(
    1 if w in {"naïve", "café", "über", "🚀"} else 6 for w in _VOCABULARY
)
_SPLIT_MIN_CHARS = 9  # longer words are sometimes emitted as two pieces


class InvalidRequest(ValueError):
    """The request body is not a valid Converse request (HTTP 400 ValidationException)."""


@dataclass(frozen=True)
class Generation:
    """What the model emits for one request."""

    tokens: tuple[str, ...]
    stop_reason: str
    input_tokens: int

    @property
    def text(self) -> str:
        return "".join(self.tokens)

    @property
    def output_tokens(self) -> int:
        return len(self.tokens)

    def usage(self) -> dict[str, int]:
        return {
            "inputTokens": self.input_tokens,
            "outputTokens": self.output_tokens,
            "totalTokens": self.input_tokens + self.output_tokens,
        }


def _fail(message: str) -> InvalidRequest:
    return InvalidRequest(message)


def _texts(blocks: Any, where: str) -> list[str]:
    if not isinstance(blocks, list) or not blocks:
        raise _fail(f"{where}: content must be a non-empty list of content blocks")
    out: list[str] = []
    for i, block in enumerate(blocks):
        if not isinstance(block, Mapping) or not isinstance(block.get("text"), str):
            raise _fail(f"{where}.content.{i}: only text content blocks are supported")
        if not block["text"].strip():
            raise _fail(f"{where}.content.{i}: The text field in the ContentBlock is blank")
        out.append(block["text"])
    return out


def validate(request: Any) -> None:
    """Raise ``InvalidRequest`` with a Bedrock-like message if ``request`` is invalid."""
    if not isinstance(request, Mapping):
        raise _fail("The request body must be a JSON object")
    messages = request.get("messages")
    if not isinstance(messages, list) or not messages:
        raise _fail("messages: must contain at least one message")
    expected = "user"
    for i, message in enumerate(messages):
        if not isinstance(message, Mapping):
            raise _fail(f"messages.{i}: must be an object")
        role = message.get("role")
        if role not in ("user", "assistant"):
            raise _fail(f"messages.{i}.role: must be one of [user, assistant]")
        if role != expected:
            # Bedrock's wording for both a leading assistant turn and two turns in a row.
            raise _fail(
                "A conversation must start with a user message and alternate "
                "between user and assistant roles."
            )
        expected = "assistant" if role == "user" else "user"
        _texts(message.get("content"), f"messages.{i}")
    system = request.get("system")
    if system is not None:
        _texts(system, "system")
    config = request.get("inferenceConfig")
    if config is None:
        return
    if not isinstance(config, Mapping):
        raise _fail("inferenceConfig: must be an object")
    max_tokens = config.get("maxTokens")
    if max_tokens is not None and (
        not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1
    ):
        raise _fail(
            f"Value '{max_tokens}' at 'inferenceConfig.maxTokens' failed to satisfy "
            "constraint: Member must have value greater than or equal to 1"
        )
    for name in ("temperature", "topP"):
        value = config.get(name)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
            raise _fail(
                f"Value '{value}' at 'inferenceConfig.{name}' failed to satisfy constraint: "
                "Member must have value between 0 and 1"
            )
    stops = config.get("stopSequences")
    if stops is not None and (
        not isinstance(stops, list) or not all(isinstance(s, str) for s in stops)
    ):
        raise _fail("inferenceConfig.stopSequences: must be a list of strings")


def last_user_text(request: Mapping[str, Any]) -> str:
    """The text of the last user message (what seeds the answer)."""
    for message in reversed(request.get("messages") or []):
        if message.get("role") == "user":
            return "\n".join(b.get("text", "") for b in message.get("content") or [])
    return ""


def input_characters(request: Mapping[str, Any]) -> int:
    total = sum(len(b.get("text", "")) for b in request.get("system") or [])
    for message in request.get("messages") or []:
        total += sum(len(b.get("text", "")) for b in message.get("content") or [])
    return total


def prompt_hash(request: Mapping[str, Any]) -> str:
    """A short hash of the last user message, safe to log instead of the prompt."""
    return hashlib.sha256(last_user_text(request).encode("utf-8")).hexdigest()[:12]


def requested_tokens(request: Mapping[str, Any], default_tokens: int) -> int:
    """The natural answer length: the last ``[tokens=N]`` directive, else the default."""
    found = _TOKENS_DIRECTIVE.findall(last_user_text(request))
    if not found:
        return default_tokens
    return min(int(found[-1]), MAX_DIRECTIVE_TOKENS)


def _word_pieces(rng: random.Random, count: int) -> list[str]:
    """``count`` tokens of sentence-shaped prose, deterministic for a given ``rng``."""
    tokens: list[str] = []
    words_left_in_sentence = 0
    while len(tokens) < count:
        start_of_sentence = words_left_in_sentence == 0
        if start_of_sentence:
            words_left_in_sentence = rng.randint(6, 14)
        word = rng.choices(_VOCABULARY, weights=_WEIGHTS)[0]
        if start_of_sentence:
            word = word[:1].upper() + word[1:]
        words_left_in_sentence -= 1
        if words_left_in_sentence == 0:
            word += "."
        elif rng.random() < 0.08:
            word += ","
        lead = "" if not tokens else " "
        if len(word) >= _SPLIT_MIN_CHARS and rng.random() < 0.5:
            cut = rng.randint(3, len(word) - 3)
            tokens.append(lead + word[:cut])
            tokens.append(word[cut:])
        else:
            tokens.append(lead + word)
    return tokens[:count]


def generate(request: Mapping[str, Any], default_tokens: int = DEFAULT_ANSWER_TOKENS) -> Generation:
    """The full answer for a (valid) Converse request body."""
    natural = requested_tokens(request, default_tokens)
    seed = int.from_bytes(hashlib.sha256(last_user_text(request).encode("utf-8")).digest()[:8])
    tokens = _word_pieces(random.Random(seed), natural)
    if tokens and not tokens[-1].endswith("."):
        # A natural end finishes its sentence; a maxTokens cut below stays mid-sentence.
        tokens[-1] = tokens[-1].rstrip(",") + "."
    stop_reason = STOP_END_TURN
    max_tokens = (request.get("inferenceConfig") or {}).get("maxTokens")
    if isinstance(max_tokens, int) and len(tokens) > max_tokens:
        tokens = tokens[:max_tokens]
        stop_reason = STOP_MAX_TOKENS
    input_tokens = max(1, (input_characters(request) + 3) // 4)
    return Generation(tuple(tokens), stop_reason, input_tokens)


def answer_text(request: Mapping[str, Any], default_tokens: int = DEFAULT_ANSWER_TOKENS) -> str:
    """The exact text the emulator streams for ``request``."""
    return generate(request, default_tokens).text


def usage(
    request: Mapping[str, Any], default_tokens: int = DEFAULT_ANSWER_TOKENS
) -> dict[str, int]:
    """The ``usage`` block the emulator reports for ``request``."""
    return generate(request, default_tokens).usage()


def request_for_prompt(prompt: str, max_tokens: int | None = None) -> dict[str, Any]:
    """A minimal Converse body for one user prompt (handy in tests)."""
    body: dict[str, Any] = {"messages": [{"role": "user", "content": [{"text": prompt}]}]}
    if max_tokens is not None:
        body["inferenceConfig"] = {"maxTokens": max_tokens}
    return body
