"""Transformer building blocks shared by the GRAM and CAT encoders and their decoders.

In the style of timm's ``vision_transformer.py``: configuration as constructor
arguments, attention through ``torch.nn.functional.scaled_dot_product_attention``.
"""

from __future__ import annotations

import abc

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class Attention(nn.Module):
    """Multi-head self-attention with a fused ``qkv`` projection (q, k, v stacked, as in
    ``nn.MultiheadAttention.in_proj_weight``)."""

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"width {dim} is not divisible by {num_heads} heads")
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor, attn_mask: Tensor | None = None) -> Tensor:
        """``x``: ``(B, N, D)``; ``attn_mask``: boolean (True = attend) or additive, broadcast
        to ``(B, H, N, N)``. Returns ``(B, N, D)``."""
        b, n, d = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.num_heads, d // self.num_heads).unbind(2)
        out = F.scaled_dot_product_attention(
            q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), attn_mask=attn_mask
        )
        return self.proj(out.transpose(1, 2).reshape(b, n, d))


class Mlp(nn.Module):
    """Two-layer perceptron with exact GELU."""

    def __init__(self, dim: int, hidden_dim: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden_dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        """``(..., D)`` to ``(..., D)``: fc1, GELU, fc2."""
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    """Pre-norm Transformer block: ``x + attn(norm1(x))``, then ``x + mlp(norm2(x))``.

    ``attn`` replaces the default :class:`Attention` (the windowed decoder attention, say);
    it must accept ``(x, attn_mask)``.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        norm_eps: float = 1e-6,
        attn: nn.Module | None = None,
    ) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=norm_eps)
        self.attn = attn if attn is not None else Attention(dim, num_heads, qkv_bias)
        self.norm2 = nn.LayerNorm(dim, eps=norm_eps)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: Tensor, attn_mask: Tensor | None = None) -> Tensor:
        """``(B, N, D)`` tokens through attention and MLP, each pre-norm and residual."""
        x = x + self.attn(self.norm1(x), attn_mask)
        return x + self.mlp(self.norm2(x))


class PatchEmbed(nn.Module):
    """Non-overlapping patches of a ``(B, C, F, T)`` spectrogram to ``(B, N, D)`` tokens.

    Tokens are frequency-major: token ``f * T' + t`` is patch row ``f``, column ``t``.
    """

    def __init__(self, in_chans: int, dim: int, patch_size: tuple[int, int]) -> None:
        super().__init__()
        self.patch_size = tuple(patch_size)
        self.proj = nn.Conv2d(in_chans, dim, kernel_size=self.patch_size, stride=self.patch_size)

    def forward(self, x: Tensor) -> Tensor:
        """Features ``(B, C, F, T)`` to patch tokens ``(B, rows * cols, D)``, frequency-major."""
        return self.proj(x).flatten(2).transpose(1, 2)


def patch_grid(patch_size: tuple[int, int], n_mels: int, chunk_frames: int) -> tuple[int, int]:
    """``(rows, cols)`` of the patches that tile an ``n_mels x chunk_frames`` chunk.

    Raises:
        ValueError: the patch does not tile the chunk.
    """
    if n_mels % patch_size[0] or chunk_frames % patch_size[1]:
        raise ValueError(
            f"patch {tuple(patch_size)} does not tile a {n_mels} x {chunk_frames} chunk"
        )
    return n_mels // patch_size[0], chunk_frames // patch_size[1]


def sincos_1d(dim: int, positions: Tensor) -> Tensor:
    """MAE 1-D sin-cos embedding: ``(N,)`` positions to ``(N, dim)``, sines then cosines."""
    if dim % 2:
        raise ValueError(f"sin-cos embedding width must be even, got {dim}")
    omega = 1.0 / 10000 ** (torch.arange(dim // 2, dtype=torch.float64) / (dim / 2.0))
    angles = positions.to(torch.float64)[:, None] * omega[None, :]
    return torch.cat([angles.sin(), angles.cos()], dim=1)


def sincos_2d(dim: int, grid: tuple[int, int], cls_token: bool = True) -> Tensor:
    """Fixed 2-D sin-cos positions for a frequency-major ``(rows, cols)`` token grid.

    The first half of the width encodes the column (time) index, the second half the row
    (frequency) index, as MAE's ``get_2d_sincos_pos_embed``. With ``cls_token`` a zero row
    is prepended.

    Returns:
        float32 ``(1, [1 +] rows * cols, dim)``.
    """
    if dim % 4:
        raise ValueError(f"2-D sin-cos embedding width must be a multiple of 4, got {dim}")
    rows, cols = grid
    row_idx, col_idx = torch.meshgrid(torch.arange(rows), torch.arange(cols), indexing="ij")
    emb = torch.cat(
        [sincos_1d(dim // 2, col_idx.flatten()), sincos_1d(dim // 2, row_idx.flatten())], dim=1
    )
    if cls_token:
        emb = torch.cat([torch.zeros(1, dim, dtype=emb.dtype), emb], dim=0)
    return emb.float()[None]


def init_transformer_weights(module: nn.Module) -> None:
    """MAE initialisation: Xavier-uniform linears, zero biases, unit LayerNorms."""
    if isinstance(module, nn.Linear):
        nn.init.xavier_uniform_(module.weight)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


class ChunkEncoder(nn.Module, metaclass=abc.ABCMeta):
    """The trunk frame shared by every encoder (GRAM-T, GRAM-M, CAT): one 2-s chunk to
    per-step embeddings.

    A subclass turns one ``(B, C, 128, frames)`` chunk into frequency-major tokens on a
    ``grid = (rows, cols)`` (:meth:`tokenize`) and gives the stack of ``blocks`` and the
    final ``norm``; this class adds fixed 2-D sin-cos positions and a CLS token (first),
    runs the blocks and reads out per-step embeddings: one step per token column
    (``frames_per_step`` frames), the column's ``rows`` tokens concatenated
    (``frame_dim = rows * embed_dim``).

    Padded token columns (``valid_steps``) never reach a real token: a bidirectional trunk
    masks them out of attention; a causal trunk (``causal = True``, whose token ``i`` sees
    tokens ``<= i`` only) runs them after every real token instead.
    """

    causal = False

    def __init__(
        self,
        grid: tuple[int, int],
        frames_per_step: int,
        embed_dim: int,
        blocks: nn.ModuleList,
        norm: nn.Module,
    ) -> None:
        super().__init__()
        self.grid = tuple(grid)
        self.frames_per_step = frames_per_step
        self.chunk_frames = self.grid[1] * frames_per_step
        self.embed_dim = embed_dim
        self.frame_dim = self.grid[0] * embed_dim
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.register_buffer("pos_embed", sincos_2d(embed_dim, self.grid), persistent=False)
        self.blocks = blocks
        self.norm = norm

    @property
    def num_patches(self) -> int:
        """Tokens of one 2-s chunk (``rows * cols``), the CLS token not counted."""
        return self.grid[0] * self.grid[1]

    @abc.abstractmethod
    def tokenize(self, x: Tensor, hidden: Tensor | None) -> Tensor:
        """``(B, C, F, T)`` to ``(B, rows * cols, D)``; ``hidden`` ``(B, rows, cols)`` marks
        tokens whose content must not reach other positions (or None)."""

    def embed(
        self, x: Tensor, keep: Tensor | None = None, valid_steps: Tensor | None = None
    ) -> tuple[Tensor, Tensor | None, Tensor | None]:
        """The block input ``(B, 1 + K, D)`` (CLS first), the attention mask or None, and
        the token order or None.

        Args:
            x: ``(B, C, 128, chunk_frames)`` normalised features.
            keep: optional ``(B, K)`` indices of the tokens to encode, in sequence order (the
                MAE / student's visible set); the others are hidden from the tokenizer and
                left out.
            valid_steps: optional ``(B,)`` number of token columns holding audio; later
                columns are hidden from the tokenizer and masked out of attention, or, in a
                causal trunk, moved after the real tokens: the returned order ``(B, N)``
                says which token each position holds.
        """
        if keep is not None and valid_steps is not None:
            raise ValueError("valid_steps and keep cannot be combined")
        b, (rows, cols) = x.shape[0], self.grid
        hidden = key_ok = None
        if keep is not None:
            hidden = torch.ones(b, self.num_patches, dtype=torch.bool, device=x.device)
            hidden = hidden.scatter(1, keep, False).view(b, rows, cols)
        if valid_steps is not None:
            columns = torch.arange(cols, device=x.device)
            padded = columns[None, :] >= valid_steps[:, None].to(x.device)
            hidden = padded[:, None, :].expand(b, rows, cols)
            if self.causal:
                index = torch.arange(self.num_patches, device=x.device)
                keep = (hidden.flatten(1) * self.num_patches + index).argsort(dim=1)
            else:
                key_ok = torch.cat([padded.new_ones(b, 1), (~hidden).flatten(1)], dim=1)
                key_ok = key_ok[:, None, None, :]
        tokens = self.tokenize(x, hidden) + self.pos_embed[:, 1:]
        if keep is not None:
            tokens = torch.gather(tokens, 1, keep[..., None].expand(-1, -1, tokens.shape[-1]))
        cls = (self.cls_token + self.pos_embed[:, :1]).expand(b, -1, -1)
        order = keep if valid_steps is not None else None
        return torch.cat([cls, tokens], dim=1), key_ok, order

    def run_block(self, block: nn.Module, h: Tensor, mask: Tensor | None) -> Tensor:
        """One block; a bidirectional trunk's blocks take the attention mask."""
        return block(h, mask)

    def forward_layers(
        self, x: Tensor, keep: Tensor | None = None, valid_steps: Tensor | None = None
    ) -> list[Tensor]:
        """Every block's output ``(B, 1 + K, D)``, CLS first, in sequence order, before the
        final norm (arguments as :meth:`embed`)."""
        h, mask, _ = self.embed(x, keep, valid_steps)
        layers = []
        for block in self.blocks:
            h = self.run_block(block, h, mask)
            layers.append(h)
        return layers

    def forward_tokens(
        self, x: Tensor, keep: Tensor | None = None, valid_steps: Tensor | None = None
    ) -> Tensor:
        """Encode a chunk; the normalised tokens ``(B, 1 + K, D)``, CLS first, in sequence
        order (arguments as :meth:`embed`)."""
        h, _ = self._encode(x, keep, valid_steps)
        return h

    def _encode(
        self, x: Tensor, keep: Tensor | None, valid_steps: Tensor | None
    ) -> tuple[Tensor, Tensor | None]:
        h, mask, order = self.embed(x, keep, valid_steps)
        for block in self.blocks:
            h = self.run_block(block, h, mask)
        return self.norm(h), order

    def forward(self, x: Tensor, valid_steps: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """``x``: ``(B, C, 128, chunk_frames)``. Returns CLS ``(B, D)`` and steps
        ``(B, cols, rows * D)``."""
        h, order = self._encode(x, None, valid_steps)
        tokens = h[:, 1:]
        if order is not None:
            index = order[..., None].expand_as(tokens)
            tokens = torch.empty_like(tokens).scatter_(1, index, tokens)
        rows, cols = self.grid
        steps = tokens.reshape(h.shape[0], rows, cols, -1).transpose(1, 2)
        return h[:, 0], steps.reshape(h.shape[0], cols, -1)


class ChunkTransformer(ChunkEncoder):
    """The Transformer trunk of GRAM-T and CAT: pre-norm :class:`Block` s over the chunk's
    tokens (bidirectional attention), LayerNorm at the end."""

    def __init__(
        self,
        grid: tuple[int, int],
        frames_per_step: int,
        embed_dim: int,
        depth: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        norm_eps: float = 1e-6,
    ) -> None:
        blocks = nn.ModuleList(
            Block(embed_dim, num_heads, mlp_ratio, norm_eps=norm_eps) for _ in range(depth)
        )
        super().__init__(
            grid, frames_per_step, embed_dim, blocks, nn.LayerNorm(embed_dim, eps=norm_eps)
        )

    def init_trunk_weights(self) -> None:
        """CLS token ``N(0, 0.02)``; blocks and final norm as :func:`init_transformer_weights`."""
        nn.init.normal_(self.cls_token, std=0.02)
        self.blocks.apply(init_transformer_weights)
        self.norm.apply(init_transformer_weights)
