"""Stack-Wise building blocks: Block, Stack, Rack (embedding -> stacks -> norm -> byte head), and LoRA.

Vocabulary follows the upstream project (mlsquare/stack-wise): a *Block* is a transformer layer (attention
with ``W_q/W_k/W_v/W_o``, SwiGLU FFN with ``gate_proj/up_proj/down_proj``), a *Stack* a list of blocks, a
*Rack* the whole model. Blocks are pre-norm (RMSNorm) with rotary position embeddings on q/k.

A LoRA adapter hangs off an ``AdaptedLinear`` as the child ``lora`` (keys ``<linear>.lora.down``,
``<linear>.lora.up``, ``<linear>.lora.scaling``): the base ``weight`` keeps its key, its dtype and its bytes,
and the adapter (always fp32) adds ``scaling * up(down(x))`` to the base output. Nothing ever merges it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

VOCAB = 256
LINEAR_NAMES = ("W_q", "W_k", "W_v", "W_o", "gate_proj", "up_proj", "down_proj")


@dataclass(frozen=True)
class Dims:
    """Sizes shared by every stack of a rack."""

    d_model: int
    n_heads: int
    d_ff: int
    seq_len: int


class LoRA(nn.Module):
    """Low-rank adapter ``scaling * up(down(x))``; ``up`` starts at zero so the output starts unchanged."""

    def __init__(self, cin: int, cout: int, rank: int, alpha: float, generator: Optional[torch.Generator] = None) -> None:
        super().__init__()
        self.down = nn.Parameter(
            torch.randn(rank, cin, generator=generator) * 0.02 if generator is not None else torch.zeros(rank, cin)
        )
        self.up = nn.Parameter(torch.zeros(cout, rank))
        self.register_buffer("scaling", torch.tensor(float(alpha) / rank))

    @property
    def rank(self) -> int:
        return self.down.shape[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(F.linear(x.float(), self.down), self.up) * self.scaling


class AdaptedLinear(nn.Linear):
    """A bias-free Linear that may carry a LoRA adapter as its child ``lora``."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__(cin, cout, bias=False)
        self.lora: Optional[LoRA] = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        y = F.linear(x, self.weight)
        if self.lora is not None:
            y = y + self.lora(x).to(y.dtype)
        return y


def rotary(x: torch.Tensor) -> torch.Tensor:
    """Apply rotary position embeddings to (B, heads, T, head_dim)."""
    t, hd = x.shape[-2], x.shape[-1]
    inv = 1.0 / (10000.0 ** (torch.arange(0, hd, 2, device=x.device, dtype=torch.float32) / hd))
    ang = torch.arange(t, device=x.device, dtype=torch.float32)[:, None] * inv[None, :]
    cos, sin = ang.cos().to(x.dtype), ang.sin().to(x.dtype)
    x1, x2 = x[..., 0::2], x[..., 1::2]
    return torch.stack([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1).flatten(-2)


class Attention(nn.Module):
    """Causal multi-head self-attention with rotary q/k."""

    def __init__(self, dims: Dims) -> None:
        super().__init__()
        if dims.d_model % dims.n_heads:
            raise ValueError(f"model.d_model {dims.d_model} must be divisible by model.n_heads {dims.n_heads}")
        self.n_heads = dims.n_heads
        self.W_q, self.W_k, self.W_v, self.W_o = (AdaptedLinear(dims.d_model, dims.d_model) for _ in range(4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = (w(x).view(b, t, self.n_heads, d // self.n_heads).transpose(1, 2) for w in (self.W_q, self.W_k, self.W_v))
        y = F.scaled_dot_product_attention(rotary(q), rotary(k), v, is_causal=True)
        return self.W_o(y.transpose(1, 2).reshape(b, t, d))


class SwiGLU(nn.Module):
    """``down(silu(gate(x)) * up(x))``."""

    def __init__(self, dims: Dims) -> None:
        super().__init__()
        self.gate_proj = AdaptedLinear(dims.d_model, dims.d_ff)
        self.up_proj = AdaptedLinear(dims.d_model, dims.d_ff)
        self.down_proj = AdaptedLinear(dims.d_ff, dims.d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class Block(nn.Module):
    """Pre-norm transformer block."""

    def __init__(self, dims: Dims) -> None:
        super().__init__()
        self.norm1, self.attn = nn.RMSNorm(dims.d_model, eps=1e-5), Attention(dims)
        self.norm2, self.ffn = nn.RMSNorm(dims.d_model, eps=1e-5), SwiGLU(dims)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.ffn(self.norm2(x))


class Stack(nn.Module):
    """A list of blocks with one precision; inputs are cast to it."""

    def __init__(self, dims: Dims, n_blocks: int) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(Block(dims) for _ in range(n_blocks))

    @property
    def dtype(self) -> torch.dtype:
        """The dtype of the stack's base weights."""
        return self.blocks[0].attn.W_q.weight.dtype

    def linears(self) -> list[tuple[str, AdaptedLinear]]:
        """Every adaptable Linear with its module path."""
        return [(n, m) for n, m in self.named_modules() if isinstance(m, AdaptedLinear)]

    def base_parameters(self) -> list[nn.Parameter]:
        """Parameters that are not LoRA adapters."""
        return [p for n, p in self.named_parameters() if ".lora." not in n]

    def adapter_parameters(self) -> list[nn.Parameter]:
        return [p for n, p in self.named_parameters() if ".lora." in n]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self.dtype)
        for block in self.blocks:
            x = block(x)
        return x


def init_stack(stack: Stack, generator: torch.Generator) -> None:
    """GPT-style init from ``generator``: N(0, 0.02) weights, residual projections scaled down, unit norms."""
    n_blocks = len(stack.blocks)
    with torch.no_grad():
        for name, p in stack.named_parameters():
            if ".lora." in name:
                continue
            if p.ndim == 1:
                p.fill_(1.0)
                continue
            std = 0.02 / math.sqrt(2 * n_blocks) if name.endswith(("W_o.weight", "down_proj.weight")) else 0.02
            p.copy_(torch.randn(p.shape, generator=generator) * std)


def attach_lora(stack: Stack, rank: int, alpha: float, targets: tuple[str, ...], generator: Optional[torch.Generator]) -> int:
    """Give every targeted Linear of ``stack`` a fresh adapter (skipping ones that have one); return how many."""
    added = 0
    for name, linear in stack.linears():
        if name.rsplit(".", 1)[-1] in targets and linear.lora is None:
            linear.lora = LoRA(linear.in_features, linear.out_features, rank, alpha, generator).to(linear.weight.device)
            added += 1
    return added


class Head(nn.Module):
    """Final RMSNorm and the byte classifier (not tied to the embedding, so it can train after stack 0 freezes)."""

    def __init__(self, dims: Dims) -> None:
        super().__init__()
        self.norm = nn.RMSNorm(dims.d_model, eps=1e-5)
        self.lm_head = nn.Linear(dims.d_model, VOCAB, bias=False)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.lm_head(self.norm(h.float()))


class Rack(nn.Module):
    """Embedding, the stacks in order, and the head."""

    def __init__(self, dims: Dims) -> None:
        super().__init__()
        self.dims = dims
        self.embed = nn.Embedding(VOCAB, dims.d_model)
        self.stacks = nn.ModuleList()
        self.head = Head(dims)

    def forward_from(self, h: torch.Tensor, start: int) -> torch.Tensor:
        """Logits from hidden states ``h`` entering stack ``start``."""
        for stack in list(self.stacks)[start:]:
            h = stack(h)
        return self.head(h)

    def prefix(self, tokens: torch.Tensor, stop: int) -> torch.Tensor:
        """Hidden states entering stack ``stop`` (the embedding followed by stacks ``0..stop-1``)."""
        h = self.embed(tokens)
        for stack in list(self.stacks)[:stop]:
            h = stack(h)
        return h

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.forward_from(self.embed(tokens), 0)
