"""Tokenisation (OpenAI CLIP BPE, open_clip's vocabulary) and the 77-token length check, with bounded work.

open_clip's tokenizer runs BPE over the whole string before it truncates to the context, and caches every word
it has seen: one 16 000-letter word takes seconds, and the cache grows without bound. Here:

- a text is cut to :data:`MAX_TOKENIZED_CHARS` characters before anything else (CLIP reads 77 tokens of at
  most 32 characters each, so the cut only touches text CLIP drops, barring long runs of spaces or entities);
- a word longer than :data:`MAX_WORD_CHARS` (after byte encoding) goes through BPE in pieces of that length:
  BPE costs about the square of a word's length;
- :func:`tokenize` stops once the context is full;
- BPE results are cached in a bounded LRU cache (:data:`MAX_CACHED_WORDS` words).

Every text within these bounds gets open_clip's token ids exactly (tests/test_bounds.py compares them).
"""
from __future__ import annotations

from functools import lru_cache
from typing import Optional, Sequence

import torch

CONTEXT_LENGTH = 77
MAX_TOKENIZED_CHARS = 4096
MAX_WORD_CHARS = 64  # longer only in junk: a 1000-letter word then costs about 3 ms, not 70
MAX_CACHED_WORDS = 20_000


@lru_cache(maxsize=1)
def _tokenizer():
    from open_clip.tokenizer import SimpleTokenizer

    return SimpleTokenizer()


@lru_cache(maxsize=MAX_CACHED_WORDS)
def _bpe(word: str) -> tuple[int, ...]:
    """Token ids of one byte-encoded word (at most MAX_WORD_CHARS long): merge the best-ranked adjacent pair
    everywhere, left to right, until no adjacent pair has a rank."""
    tok = _tokenizer()
    if word in _specials():
        return (tok.encoder[word],)
    ranks = tok.bpe_ranks
    parts = list(word[:-1]) + [word[-1] + "</w>"]
    while len(parts) > 1:
        best = min(range(len(parts) - 1), key=lambda i: ranks.get((parts[i], parts[i + 1]), float("inf")))
        pair = (parts[best], parts[best + 1])
        if pair not in ranks:
            break
        merged, i = [], 0
        while i < len(parts):
            if i + 1 < len(parts) and parts[i] == pair[0] and parts[i + 1] == pair[1]:
                merged.append(pair[0] + pair[1])
                i += 2
            else:
                merged.append(parts[i])
                i += 1
        parts = merged
    return tuple(tok.encoder[p] for p in parts)


@lru_cache(maxsize=1)
def _specials() -> frozenset:
    tok = _tokenizer()
    return frozenset(tok.decoder[i] for i in tok.all_special_ids)


def bpe_input(text: str):
    """The byte-encoded pieces of ``text`` that BPE sees, in order, each at most :data:`MAX_WORD_CHARS` long."""
    tok = _tokenizer()
    for match in tok.pat.finditer(tok.clean_fn(text[:MAX_TOKENIZED_CHARS])):
        word = "".join(tok.byte_encoder[b] for b in match.group().encode("utf-8"))
        for i in range(0, len(word), MAX_WORD_CHARS):
            yield word[i:i + MAX_WORD_CHARS]


def encode(text: str, limit: Optional[int] = None) -> list[int]:
    """Token ids of ``text`` (no SOT/EOT), at most ``limit`` of them (None: all within the bounds)."""
    ids: list[int] = []
    for piece in bpe_input(text):
        ids.extend(_bpe(piece))
        if limit is not None and len(ids) >= limit:
            return ids[:limit]
    return ids


def tokenize(texts: Sequence[str], context_length: int = CONTEXT_LENGTH) -> torch.Tensor:
    """Token ids (N, context_length), SOT ... EOT, zero padded; over-long texts are truncated (as open_clip:
    the last kept position becomes EOT)."""
    tok = _tokenizer()
    sot, eot = tok.sot_token_id, tok.eot_token_id
    result = torch.zeros(len(texts), context_length, dtype=torch.long)
    for row, text in enumerate(texts):
        ids = [sot] + encode(text, limit=context_length) + [eot]
        if len(ids) > context_length:
            ids = ids[:context_length]
            ids[-1] = eot
        result[row, :len(ids)] = torch.tensor(ids)
    return result


def token_count(text: str) -> int:
    """Tokens the text takes in the context, SOT and EOT included (of its first MAX_TOKENIZED_CHARS
    characters)."""
    return len(encode(text)) + 2


def fits_context(text: str, reserved: int = 0, context_length: int = CONTEXT_LENGTH) -> bool:
    """Whether ``text`` (plus ``reserved`` tokens, e.g. 8 learned contexts) fits without truncation."""
    return token_count(text) + reserved <= context_length
