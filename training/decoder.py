"""The multi-window (local-global) attention decoder of MW-MAE, as GRAM pretrains with it.

Each head has its own window: head ``h`` with window ``w > 0`` splits the frequency-major
patch sequence into non-overlapping runs of ``w`` tokens and attends within its run, with a
learned bias per relative offset ``i - j`` (a table of ``2w - 1`` values); a head with
window 0 attends globally with no bias. GRAM's windows: ``[2, 5, 10, 25, 50, 100, 0, 0]``
for 200 patches, ``[2, 5, 10, 25, 50, 0, 0, 0]`` for 100 time patches.

The blocks are hear_gram's shared :class:`~hear_gram.layers.Block` with
:class:`WindowedAttention` in place of global attention. The reference checkpoint's decoder
keys convert onto this module with :func:`convert_reference_decoder`.
"""

from __future__ import annotations

import re

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from hear_gram.errors import CheckpointError
from hear_gram.layers import Block, init_transformer_weights, sincos_2d

PATCH_WINDOWS = [2, 5, 10, 25, 50, 100, 0, 0]
TIME_WINDOWS = [2, 5, 10, 25, 50, 0, 0, 0]


def relative_index(window: int, device: torch.device | None = None) -> Tensor:
    """``(w, w)`` index into a ``(2w - 1)`` bias table: ``i - j + w - 1``."""
    pos = torch.arange(window, device=device)
    return pos[:, None] - pos[None, :] + window - 1


class WindowedAttention(nn.Module):
    """Multi-head self-attention with one window size per head (0 = global).

    Runs of neighbouring heads with the same window are computed together: windowed heads
    fold their windows into the batch dimension and run ``scaled_dot_product_attention``
    with the relative bias as an additive mask, so the cost grows with ``N * w`` rather than
    ``N^2``.
    """

    def __init__(self, dim: int, windows: list[int], qkv_bias: bool = True) -> None:
        super().__init__()
        if dim % len(windows):
            raise ValueError(f"width {dim} is not divisible by {len(windows)} heads")
        self.windows = [int(w) for w in windows]
        self.num_heads = len(windows)
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.bias_tables = nn.ParameterDict(
            {str(h): nn.Parameter(torch.zeros(2 * w - 1)) for h, w in enumerate(windows) if w}
        )
        for table in self.bias_tables.values():
            nn.init.trunc_normal_(table, std=0.02)
        # (first head, end head, window) of each run of neighbouring heads sharing a window.
        self.runs: list[tuple[int, int, int]] = []
        for h, w in enumerate(self.windows):
            if self.runs and self.runs[-1][2] == w:
                self.runs[-1] = (self.runs[-1][0], h + 1, w)
            else:
                self.runs.append((h, h + 1, w))

    def head_bias(self, head: int) -> Tensor:
        """The ``(w, w)`` relative-position bias of a windowed head."""
        w = self.windows[head]
        table = self.bias_tables[str(head)]
        return table[relative_index(w, table.device)]

    def forward(self, x: Tensor, attn_mask: Tensor | None = None) -> Tensor:
        """``x``: ``(B, N, D)`` with ``N`` divisible by every window. Returns ``(B, N, D)``."""
        if attn_mask is not None:
            raise ValueError("WindowedAttention takes no attention mask")
        b, n, d = x.shape
        hd = d // self.num_heads
        q, k, v = self.qkv(x).reshape(b, n, 3, self.num_heads, hd).permute(2, 0, 3, 1, 4)
        outputs = []
        for first, end, w in self.runs:
            qg, kg, vg = q[:, first:end], k[:, first:end], v[:, first:end]
            if w == 0:
                outputs.append(F.scaled_dot_product_attention(qg, kg, vg))
                continue
            if n % w:
                raise ValueError(f"sequence of {n} tokens does not split into windows of {w}")
            heads = end - first
            shape = (b, heads * (n // w), w, hd)
            bias = torch.stack([self.head_bias(h) for h in range(first, end)]).to(q.dtype)
            bias = bias[:, None].expand(-1, n // w, -1, -1).reshape(1, -1, w, w)
            out = F.scaled_dot_product_attention(
                qg.reshape(shape), kg.reshape(shape), vg.reshape(shape), attn_mask=bias
            )
            outputs.append(out.reshape(b, heads, n, hd))
        out = torch.cat(outputs, dim=1)
        return self.proj(out.transpose(1, 2).reshape(b, n, d))


class MultiWindowDecoder(nn.Module):
    """MAE decoder over a full patch grid: visible tokens from the encoder, a fixed mask
    token elsewhere, fixed sin-cos positions, multi-window blocks, a linear patch head.

    The CLS token is not decoded (windows need the bare patch sequence). As in the
    reference, the mask token is a fixed random buffer (not learned).
    """

    def __init__(
        self,
        grid: tuple[int, int],
        encoder_dim: int,
        patch_values: int,
        dim: int = 512,
        depth: int = 8,
        windows: list[int] = PATCH_WINDOWS,
        mlp_ratio: float = 4.0,
        norm_eps: float = 1e-5,
    ) -> None:
        super().__init__()
        num_patches = grid[0] * grid[1]
        bad = [w for w in windows if w and num_patches % w]
        if bad:
            raise ValueError(f"decoder windows {bad} do not divide the {num_patches} patches")
        self.grid = tuple(grid)
        self.windows = list(windows)
        self.embed = nn.Linear(encoder_dim, dim)
        self.register_buffer("mask_token", torch.zeros(1, 1, dim))
        self.register_buffer(
            "pos_embed", sincos_2d(dim, self.grid, cls_token=False), persistent=False
        )
        self.blocks = nn.ModuleList(
            Block(
                dim,
                len(windows),
                mlp_ratio,
                norm_eps=norm_eps,
                attn=WindowedAttention(dim, windows),
            )
            for _ in range(depth)
        )
        self.norm = nn.LayerNorm(dim, eps=norm_eps)
        self.head = nn.Linear(dim, patch_values)
        self.init_weights()

    def init_weights(self) -> None:
        nn.init.normal_(self.mask_token, std=0.02)
        for module in (self.embed, self.blocks, self.norm, self.head):
            module.apply(init_transformer_weights)

    def forward(self, visible: Tensor, keep: Tensor) -> Tensor:
        """Reconstruct every patch.

        Args:
            visible: ``(B, K, D_enc)`` encoder outputs of the visible patches (no CLS).
            keep: ``(B, K)`` their patch indices.
        Returns:
            ``(B, N, patch_values)`` predictions for all patches.
        """
        h = self.embed(visible)
        b, _, d = h.shape
        tokens = self.mask_token.to(h.dtype).expand(b, self.pos_embed.shape[1], d)
        tokens = tokens.scatter(1, keep[..., None].expand(-1, -1, d), h)
        x = tokens + self.pos_embed.to(h.dtype)
        for block in self.blocks:
            x = block(x)
        return self.head(self.norm(x))


# --- the reference layout (labhamlet/GRAM-T decoder key names) ---------------------------

_RENAMES = [
    (r"decoder_embed\.", "embed."),
    (r"decoder_norm\.", "norm."),
    (r"spec_pred\.0\.", "head."),
    (r"decoder_blocks\.(\d+)\.wmha\.qkv\.", r"blocks.\1.attn.qkv."),
    (r"decoder_blocks\.(\d+)\.wmha\.proj\.", r"blocks.\1.attn.proj."),
    (r"decoder_blocks\.(\d+)\.(norm1|norm2|mlp\.fc1|mlp\.fc2)\.", r"blocks.\1.\2."),
]
_HEAD_KEY = re.compile(
    r"decoder_blocks\.(\d+)\.wmha\.attn_heads\.(\d+)\."
    r"(relative_position_bias_table|relative_position_index)"
)


def _table_from_reference(table: Tensor, index: Tensor, name: str) -> Tensor:
    """Our ``(2w - 1,)`` table from a reference table ``(2w - 1, 1)`` and its ``(w, w)``
    index; the index must depend on ``i - j`` only (a relative bias)."""
    w = index.shape[0]
    flat = table.reshape(-1)
    if index.shape != (w, w) or flat.numel() != 2 * w - 1:
        raise CheckpointError(
            f"{name}: bias table {tuple(table.shape)} and index {tuple(index.shape)} do not "
            "form a (2w-1, 1) table with a (w, w) index"
        )
    offsets = relative_index(w).flatten()
    values = flat[index.long().flatten()]
    ours = torch.zeros_like(flat).scatter(0, offsets, values)
    covered = torch.zeros(2 * w - 1, dtype=torch.bool).scatter(0, offsets, True)
    if not covered.all() or not torch.equal(ours[offsets], values):
        raise CheckpointError(f"{name}: the index is not a function of i - j")
    return ours


def convert_reference_decoder(
    state: dict[str, Tensor], decoder: MultiWindowDecoder
) -> dict[str, Tensor]:
    """Map reference decoder keys (as :func:`hear_gram.gram.convert_reference_state_dict`
    returns them) onto ``decoder``'s state dict.

    ``decoder_pos_embed`` is checked against our fixed positions and dropped; per-head bias
    tables are re-indexed through their ``relative_position_index``.

    Raises:
        CheckpointError: an unrecognised key, or positions that differ from ours.
    """
    out, tables, indices, unknown = {}, {}, {}, []
    for key, value in state.items():
        if key == "mask_token":
            out["mask_token"] = value.reshape(decoder.mask_token.shape)
        elif key == "decoder_pos_embed":
            expected = decoder.pos_embed
            if value.shape != expected.shape or not torch.allclose(
                value.float(), expected, rtol=1e-4, atol=1e-5
            ):
                raise CheckpointError(
                    f"decoder_pos_embed {tuple(value.shape)} differs from our fixed sin-cos "
                    f"positions {tuple(expected.shape)}: another patch grid or width"
                )
        elif match := _HEAD_KEY.fullmatch(key):
            block, head, kind = match.groups()
            slot = f"blocks.{block}.attn.bias_tables.{head}"
            (tables if kind.endswith("table") else indices)[slot] = value
        else:
            for pattern, replacement in _RENAMES:
                if re.match(pattern, key):
                    out[re.sub(pattern, replacement, key, count=1)] = value
                    break
            else:
                unknown.append(key)
    if unknown:
        raise CheckpointError(f"unrecognised decoder keys in a reference checkpoint: {unknown}")
    if set(tables) != set(indices):
        raise CheckpointError(
            "reference decoder heads without both relative_position_bias_table and "
            f"relative_position_index: {sorted(set(tables) ^ set(indices))}"
        )
    for slot in tables:
        out[slot] = _table_from_reference(tables[slot], indices[slot], slot)
    return out
