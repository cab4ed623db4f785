"""Tokenisation (OpenAI CLIP BPE, via open_clip) and the 77-token length check."""
from __future__ import annotations

from functools import lru_cache
from typing import Sequence

import torch

CONTEXT_LENGTH = 77


@lru_cache(maxsize=1)
def _tokenizer():
    from open_clip.tokenizer import SimpleTokenizer

    return SimpleTokenizer()


def tokenize(texts: Sequence[str], context_length: int = CONTEXT_LENGTH) -> torch.Tensor:
    """Token ids (N, context_length), SOT ... EOT, zero padded; over-long texts are truncated."""
    return _tokenizer()(list(texts), context_length=context_length)


def token_count(text: str) -> int:
    """Tokens the text takes in the context, SOT and EOT included."""
    return len(_tokenizer().encode(text)) + 2


def fits_context(text: str, reserved: int = 0, context_length: int = CONTEXT_LENGTH) -> bool:
    """Whether ``text`` (plus ``reserved`` tokens, e.g. 8 learned contexts) fits without truncation."""
    return token_count(text) + reserved <= context_length
