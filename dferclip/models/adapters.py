"""Bottleneck adapters (PEFT) wrapped around open_clip's frozen residual blocks, from outside.

One frozen transformer serves several *streams* (FineCLIPER: the video, parsing and landmark encoders share
one frozen CLIP ViT; the positive, negative and caption encoders share one frozen CLIP text transformer).
Each stream has its own adapters. A batch may hold several streams one after another along the batch axis;
:func:`route` says which rows belong to which stream, so all streams go through the frozen weights in one
pass. Rows of a stream without adapters (or outside any :func:`route`) see the plain frozen block.

Layout per block (AIM, Yang et al. ICLR 2023: ``S_Adapter`` + ``MLP_Adapter``)::

    a = attn(ln_1(x));  x = x + a + serial(a)                 # serial adapter after self-attention
    h = ln_2(x);        x = x + mlp(h) + s * parallel(h)      # adapter parallel to the MLP, scale s

Adapters are ``FC down -> GELU -> FC up`` with the up-projection initialised to zero (as AIM), so a fresh
model computes exactly what the frozen CLIP computes. Routing uses a ``ContextVar``: safe across threads,
but not with activation checkpointing (recomputation would run outside the route), which is not used.
"""
from __future__ import annotations

from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Iterator, Optional, Sequence

import torch
from torch import nn

_ROUTE: ContextVar[Optional[tuple]] = ContextVar("dferclip_adapter_route", default=None)


@dataclass(frozen=True)
class AdapterSpec:
    """The adapters one stream gets in every block of a transformer."""

    serial: bool = True  # after self-attention
    parallel: bool = True  # parallel to the MLP, scaled by ``scale``
    ratio: float = 0.25  # bottleneck width / model width (AIM default 0.25: 768 -> 192)
    scale: float = 0.5  # s of the parallel adapter (FineCLIPER Table 9: 0.5)

    @classmethod
    def from_dict(cls, d: dict) -> "AdapterSpec":
        return cls(**d)


class Adapter(nn.Module):
    """``FC down -> GELU -> FC up``; returns the adapter's output only (the caller adds the residual)."""

    def __init__(self, dim: int, ratio: float):
        super().__init__()
        hidden = max(1, int(round(dim * ratio)))
        self.down = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.up = nn.Linear(hidden, dim)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.up(self.act(self.down(x.to(self.down.weight.dtype)))).to(x.dtype)


class StreamAdapters(nn.Module):
    def __init__(self, dim: int, spec: AdapterSpec):
        super().__init__()
        self.scale = float(spec.scale)
        self.serial = Adapter(dim, spec.ratio) if spec.serial else None
        self.parallel = Adapter(dim, spec.ratio) if spec.parallel else None


@contextmanager
def route(*parts: tuple[str, int]) -> Iterator[None]:
    """Rows ``[0, n1)`` of every batch in this block belong to stream ``parts[0][0]``, the next ``n2`` to
    ``parts[1][0]`` and so on (``parts = ((name, n1), (name, n2), ...)``)."""
    token = _ROUTE.set(tuple((str(name), int(n)) for name, n in parts))
    try:
        yield
    finally:
        _ROUTE.reset(token)


class AdaptedBlock(nn.Module):
    """An open_clip ``ResidualAttentionBlock`` (kept frozen, unchanged) with per-stream adapters."""

    def __init__(self, block: nn.Module, streams: dict[str, AdapterSpec]):
        super().__init__()
        if not all(hasattr(block, a) for a in ("ln_1", "attention", "ls_1", "ln_2", "mlp", "ls_2")):
            raise TypeError(f"cannot adapt {type(block).__name__}: not an open_clip ResidualAttentionBlock")
        self.block = block
        dim = block.ln_1.normalized_shape[0]
        self.batch_dim = 0 if getattr(block.attn, "batch_first", True) else 1
        self.adapters = nn.ModuleDict({name: StreamAdapters(dim, spec) for name, spec in streams.items()})

    def _per_stream(self, x: torch.Tensor, kind: str) -> Optional[torch.Tensor]:
        """Adapter outputs for the routed rows (zeros for rows without that adapter); None if none apply."""
        parts = _ROUTE.get()
        if not parts:
            return None
        sizes = [n for _, n in parts]
        if sum(sizes) != x.shape[self.batch_dim]:
            raise ValueError(f"adapter route covers {sum(sizes)} rows, the batch has {x.shape[self.batch_dim]}")
        outs, any_applied = [], False
        for (name, _), chunk in zip(parts, x.split(sizes, dim=self.batch_dim)):
            stream = self.adapters[name] if name in self.adapters else None
            adapter = getattr(stream, kind) if stream is not None else None
            if adapter is None:
                outs.append(torch.zeros_like(chunk))
            else:
                scale = stream.scale if kind == "parallel" else 1.0
                outs.append(adapter(chunk) * scale if scale != 1.0 else adapter(chunk))
                any_applied = True
        return torch.cat(outs, dim=self.batch_dim) if any_applied else None

    def forward(self, q_x: torch.Tensor, k_x=None, v_x=None, attn_mask: Optional[torch.Tensor] = None):
        b = self.block
        a = b.ls_1(b.attention(q_x=b.ln_1(q_x), attn_mask=attn_mask))
        serial = self._per_stream(a, "serial")
        x = q_x + a if serial is None else q_x + a + serial
        h = b.ln_2(x)
        parallel = self._per_stream(h, "parallel")
        x = x + b.ls_2(b.mlp(h))
        return x if parallel is None else x + parallel


def adapt_transformer(transformer: nn.Module, streams: dict[str, AdapterSpec]) -> nn.ModuleList:
    """Wrap every block of an open_clip ``Transformer`` (in place); returns the wrapped blocks."""
    if any(isinstance(b, AdaptedBlock) for b in transformer.resblocks):
        raise ValueError("this transformer is already adapted")
    if getattr(transformer, "grad_checkpointing", False):
        raise ValueError("adapter routing does not work with activation checkpointing; turn it off")
    transformer.resblocks = nn.ModuleList(AdaptedBlock(b, streams) for b in transformer.resblocks)
    return transformer.resblocks


def adapter_parameters(blocks: Sequence[AdaptedBlock], stream: str) -> list[nn.Parameter]:
    return [p for b in blocks if stream in b.adapters for p in b.adapters[stream].parameters()]
