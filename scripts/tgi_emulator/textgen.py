"""Deterministic "generation": whitespace tokens, echoed back, then an end-of-sequence token.

One whitespace-separated word is one token (ids from a CRC of the word, so they are stable).
The model answers by echoing the words of its prompt (for chat: of the last user message) and
then emits EOS; `max_new_tokens` cuts it short ("length"), a stop sequence ends it
("stop_sequence"). Validation mirrors router/src/validation.rs messages (422, error_type
"validation").
"""

from __future__ import annotations

import re
import zlib
from dataclasses import dataclass

EOS_TEXT = "</s>"
EOS_ID = 2
_WORD = re.compile(r"\S+")


class ValidationError(Exception):
    """Input validation error (HTTP 422, error_type "validation")."""

    def __init__(self, message: str) -> None:
        super().__init__(f"Input validation error: {message}")


@dataclass(frozen=True)
class Token:
    id: int
    text: str
    logprob: float
    special: bool = False

    def as_json(self) -> dict:
        return {"id": self.id, "text": self.text, "logprob": self.logprob, "special": self.special}


@dataclass(frozen=True)
class Generation:
    tokens: tuple[Token, ...]
    finish_reason: str  # length | eos_token | stop_sequence
    input_tokens: tuple[Token, ...]

    @property
    def text(self) -> str:
        return "".join(t.text for t in self.tokens if not t.special)

    @property
    def generated_tokens(self) -> int:
        return len(self.tokens)


@dataclass(frozen=True)
class Limits:
    max_input_tokens: int
    max_total_tokens: int
    max_best_of: int
    max_stop_sequences: int
    max_top_n_tokens: int
    default_max_new_tokens: int | None  # None: up to max_total_tokens (3.x)


def token_id(word: str, vocab_size: int) -> int:
    return 3 + zlib.crc32(word.encode()) % max(1, vocab_size - 3)


def tokenize(text: str, vocab_size: int = 32000) -> list[tuple[int, str, int, int]]:
    """(id, text, start, stop) per token, like /tokenize."""
    return [
        (token_id(m.group(), vocab_size), m.group(), m.start(), m.end())
        for m in _WORD.finditer(text)
    ]


def count_tokens(text: str) -> int:
    return len(_WORD.findall(text))


def _logprob(index: int) -> float:
    return round(-0.25 - (index % 7) * 0.125, 4)


def validate_and_resolve(
    input_length: int,
    limits: Limits,
    *,
    max_new_tokens: int | None,
    temperature: float | None = None,
    top_p: float | None = None,
    top_k: int | None = None,
    best_of: int | None = None,
    stop: list[str] | None = None,
    top_n_tokens: int | None = None,
    truncate: int | None = None,
) -> int:
    """Check parameters like the router; return the effective max_new_tokens."""
    if best_of is not None and (best_of <= 0 or best_of > limits.max_best_of):
        raise ValidationError(
            f"`best_of` must be > 0 and <= {limits.max_best_of}. Given: {best_of}"
        )
    if temperature is not None and temperature <= 0:
        raise ValidationError("`temperature` must be strictly positive")
    if top_p is not None and (top_p <= 0 or top_p >= 1.0):
        raise ValidationError("`top_p` must be > 0.0 and < 1.0")
    if top_k is not None and top_k <= 0:
        raise ValidationError("`top_k` must be strictly positive")
    if stop is not None and len(stop) > limits.max_stop_sequences:
        raise ValidationError(
            f"`stop` supports up to {limits.max_stop_sequences} stop sequences. Given: {len(stop)}"
        )
    if top_n_tokens is not None and top_n_tokens > limits.max_top_n_tokens:
        raise ValidationError(
            f"`top_n_tokens` must be >= 0 and <= {limits.max_top_n_tokens}. Given: {top_n_tokens}"
        )
    if input_length == 0:
        raise ValidationError("`inputs` cannot be empty")
    if truncate is not None and truncate > 0:
        input_length = min(input_length, truncate)
    if max_new_tokens is None:
        if limits.default_max_new_tokens is not None:
            max_new_tokens = limits.default_max_new_tokens
        else:
            max_new_tokens = max(0, limits.max_total_tokens - input_length)
    if max_new_tokens == 0:
        raise ValidationError("`max_new_tokens` must be strictly positive")
    if input_length > limits.max_input_tokens:
        raise ValidationError(
            f"`inputs` must have less than {limits.max_input_tokens} tokens. Given: {input_length}"
        )
    if input_length + max_new_tokens > limits.max_total_tokens:
        raise ValidationError(
            f"`inputs` tokens + `max_new_tokens` must be <= {limits.max_total_tokens}. Given: "
            f"{input_length} `inputs` tokens and {max_new_tokens} `max_new_tokens`"
        )
    return max_new_tokens


def generate(
    prompt: str,
    echo_source: str,
    max_new_tokens: int,
    stop: list[str] | None,
    vocab_size: int,
) -> Generation:
    """Echo `echo_source` word by word, then EOS; honour max_new_tokens and stop sequences."""
    words = _WORD.findall(echo_source) or ["Hello"]
    input_tokens = tuple(
        Token(token_id(w, vocab_size), w if i == 0 else " " + w, _logprob(i))
        for i, w in enumerate(_WORD.findall(prompt))
    )
    tokens: list[Token] = []
    finish = "length"
    text = ""
    for i in range(max_new_tokens):
        if i < len(words):
            piece = words[i] if i == 0 else " " + words[i]
            tokens.append(Token(token_id(words[i], vocab_size), piece, _logprob(i)))
            text += piece
            if stop and any(text.endswith(s) for s in stop if s):
                finish = "stop_sequence"
                break
        else:
            tokens.append(Token(EOS_ID, EOS_TEXT, -0.0625, special=True))
            finish = "eos_token"
            break
    return Generation(tuple(tokens), finish, input_tokens)
