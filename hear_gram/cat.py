"""CAT encoder: a multi-resolution convolutional stem, then a ViT, and its named variants.

Input is one normalised 2-s chunk ``(B, C, 128, 200)`` of GRAM features (C = 1, 2 or 7), so
GRAM and CAT share one feature pipeline, the 2-s chunk aggregation and the HEAR API.

The stem replaces a single patch embedding with three convolutional stages (ConvMAE style):

====================  ===========================  ==========================  ===========
stage                 layers                       map for a 128 x 200 chunk   token share
====================  ===========================  ==========================  ===========
1                     conv k/s (4, 4), LN, 2 conv  256 x 32 x 50               conv (4, 2)
                      blocks
2                     conv k/s (2, 2), LN, 2 conv  384 x 16 x 25               conv (2, 1)
                      blocks
3                     conv k/s (2, 1), LN, Linear  768 x 8 x 25                as is
====================  ===========================  ==========================  ===========

The three token maps are summed (multi-scale fusion). Tokens are 16 mels x 8 frames: the
same 8 x 25 frequency-major grid, 80-ms step and 6144-d step embedding as GRAM's 16 x 8
patches. (The reference's stage 3 strides by 2 in time too, for 16 x 16 tokens on 1024-frame
clips; 16 frames do not tile a 200-frame chunk, so here only stage 3's time stride differs:
stages 1 and 2, where the convolutions mix neighbours, see the same 4 x 4 and 8 x 8 frame
footprints as in the reference.)

Masking: tokens outside ``keep`` (the student's masked tokens) and the token columns that
hold only padding are zeroed inside every conv block before its depthwise convolution (the
token mask upsampled to the stage's resolution), so their content never reaches another
position; masked tokens are then left out of the Transformer, padded ones out of attention.
"""

from __future__ import annotations

import math

from torch import Tensor, nn

from hear_gram import features as feat
from hear_gram.layers import ChunkTransformer, Mlp

# (frequency, time) stride of each stem stage; their product is the token size (16 x 8).
CHUNK_STRIDES = ((4, 4), (2, 2), (2, 1))
CAT_BASE = {
    "strides": CHUNK_STRIDES,
    "stem_dims": (256, 384),
    "stem_depths": (2, 2),
    "embed_dim": 768,
    "depth": 11,
    "num_heads": 12,
    "mlp_ratio": 4.0,
}

# Named variants: the feature pipeline each expects and its encoder arguments.
CAT_VARIANTS: dict[str, dict] = {
    "cat-binaural": {"features": "binaural", "encoder": {"in_chans": 2, **CAT_BASE}, "hub": None},
    "cat-ambisonics": {
        "features": "ambisonics",
        "encoder": {"in_chans": 7, **CAT_BASE},
        "hub": None,
    },
    "cat-clean": {"features": "mono", "encoder": {"in_chans": 1, **CAT_BASE}, "hub": None},
}


class ConvBlock(nn.Module):
    """ConvMAE convolutional block on a channels-last map ``(B, H, W, C)``.

    ``x + pw_out(dw_conv(visible * pw_in(norm1(x))))`` (a 5 x 5 depthwise convolution in place
    of attention), then ``x + mlp(norm2(x))``; the 1 x 1 convolutions are linears over C.
    """

    def __init__(
        self, dim: int, mlp_ratio: float = 4.0, kernel_size: int = 5, norm_eps: float = 1e-6
    ) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=norm_eps)
        self.pw_in = nn.Linear(dim, dim)
        self.dw_conv = nn.Conv2d(dim, dim, kernel_size, padding=kernel_size // 2, groups=dim)
        self.pw_out = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim, eps=norm_eps)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: Tensor, visible: Tensor | None = None) -> Tensor:
        """``x``: ``(B, H, W, C)``; ``visible``: ``(B, H, W, 1)``, 0 where masked."""
        h = self.pw_in(self.norm1(x))
        if visible is not None:
            h = h * visible
        h = self.dw_conv(h.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
        x = x + self.pw_out(h)
        return x + self.mlp(self.norm2(x))


class ConvStage(nn.Module):
    """Strided patchify convolution, LayerNorm and ``depth`` conv blocks:
    ``(B, C_in, H, W)`` to ``(B, dim, H / s_f, W / s_t)``."""

    def __init__(
        self,
        in_dim: int,
        dim: int,
        stride: tuple[int, int],
        depth: int,
        mlp_ratio: float = 4.0,
        norm_eps: float = 1e-6,
    ) -> None:
        super().__init__()
        self.stride = tuple(stride)
        self.proj = nn.Conv2d(in_dim, dim, kernel_size=self.stride, stride=self.stride)
        self.norm = nn.LayerNorm(dim, eps=norm_eps)
        self.blocks = nn.ModuleList(
            ConvBlock(dim, mlp_ratio, norm_eps=norm_eps) for _ in range(depth)
        )

    def forward(self, x: Tensor, visible: Tensor | None = None) -> Tensor:
        """``visible``: ``(B, H_out, W_out, 1)``, 0 at masked positions, or None."""
        x = self.norm(self.proj(x).permute(0, 2, 3, 1))
        for block in self.blocks:
            x = block(x, visible)
        return x.permute(0, 3, 1, 2)


class MultiResolutionStem(nn.Module):
    """CAT's multi-resolution block: three conv stages whose outputs are projected to the
    token grid and summed. ``(B, C, F, T)`` to frequency-major tokens ``(B, N, D)``."""

    def __init__(
        self,
        in_chans: int,
        embed_dim: int = 768,
        dims: tuple[int, int] = (256, 384),
        depths: tuple[int, int] = (2, 2),
        strides: tuple[tuple[int, int], ...] = CHUNK_STRIDES,
        mlp_ratio: float = 4.0,
        norm_eps: float = 1e-6,
    ) -> None:
        super().__init__()
        strides = [tuple(s) for s in strides]
        if len(strides) != 3 or len(dims) != 2 or len(depths) != 2:
            raise ValueError("the stem has 3 stages: 3 strides, 2 widths and 2 depths")
        self.strides = strides
        widths = (in_chans, *dims, embed_dim)
        self.stages = nn.ModuleList(
            ConvStage(widths[i], widths[i + 1], strides[i], d, mlp_ratio, norm_eps)
            for i, d in enumerate((*depths, 0))
        )
        self.proj = nn.Linear(embed_dim, embed_dim)
        # Each earlier stage reaches the token grid through one non-overlapping convolution.
        self.fuse = nn.ModuleList(
            nn.Conv2d(dims[i], embed_dim, self.stage_factor(i), stride=self.stage_factor(i))
            for i in range(2)
        )

    @property
    def token_size(self) -> tuple[int, int]:
        """Input bins per token, ``(frequency, time)``: the product of the strides."""
        return (math.prod(s[0] for s in self.strides), math.prod(s[1] for s in self.strides))

    def stage_factor(self, stage: int) -> tuple[int, int]:
        """Positions of stage ``stage``'s map per token along (frequency, time)."""
        later = self.strides[stage + 1 :]
        return math.prod(s[0] for s in later), math.prod(s[1] for s in later)

    def stage_outputs(self, x: Tensor, hidden: Tensor | None = None) -> list[Tensor]:
        """The three stage maps ``(B, C_i, H_i, W_i)``.

        Args:
            x: ``(B, C, F, T)``.
            hidden: optional ``(B, rows, cols)`` boolean token mask (True = masked); it is
                upsampled to each stage and zeroes those positions in its conv blocks.
        """
        maps = []
        for i, stage in enumerate(self.stages):
            visible = None
            if hidden is not None and len(stage.blocks):
                f, t = self.stage_factor(i)
                keep = (~hidden).repeat_interleave(f, dim=1).repeat_interleave(t, dim=2)
                visible = keep[..., None].to(x.dtype)
            x = stage(x, visible)
            maps.append(x)
        return maps

    def forward(self, x: Tensor, hidden: Tensor | None = None) -> Tensor:
        """``x``: ``(B, C, F, T)``; ``hidden``: ``(B, rows, cols)`` or None. Returns
        ``(B, rows * cols, D)``, frequency-major."""
        s1, s2, s3 = self.stage_outputs(x, hidden)
        fused = self.fuse[0](s1) + self.fuse[1](s2)
        tokens = self.proj(s3.flatten(2).transpose(1, 2))
        return tokens + fused.flatten(2).transpose(1, 2)


class CatEncoder(ChunkTransformer):
    """CAT encoder over one 2-s multi-channel spectrogram chunk: the multi-resolution stem,
    then the Transformer trunk shared with GRAM (fixed 2-D sin-cos positions, one CLS
    token, pre-norm blocks, per-step read-out: see :class:`hear_gram.layers.ChunkTransformer`).

    Tokens hidden from the stem (the student's masked tokens, padded columns) are zeroed
    inside every conv stage, so their content never reaches another position.
    """

    def __init__(
        self,
        in_chans: int = 2,
        n_mels: int = feat.N_MELS,
        chunk_frames: int = 200,
        strides: tuple[tuple[int, int], ...] = CHUNK_STRIDES,
        stem_dims: tuple[int, int] = (256, 384),
        stem_depths: tuple[int, int] = (2, 2),
        embed_dim: int = 768,
        depth: int = 11,
        num_heads: int = 12,
        mlp_ratio: float = 4.0,
        norm_eps: float = 1e-6,
    ) -> None:
        stem = MultiResolutionStem(
            in_chans, embed_dim, tuple(stem_dims), tuple(stem_depths), strides, mlp_ratio, norm_eps
        )
        token_f, token_t = stem.token_size
        if n_mels % token_f or chunk_frames % token_t:
            raise ValueError(
                f"strides {strides} make {token_f} x {token_t} tokens, which do not tile a "
                f"{n_mels} x {chunk_frames} chunk"
            )
        grid = (n_mels // token_f, chunk_frames // token_t)
        super().__init__(grid, token_t, embed_dim, depth, num_heads, mlp_ratio, norm_eps)
        self.in_chans = in_chans
        self.stem = stem
        self.init_weights()

    def init_weights(self) -> None:
        """Xavier-uniform stem convolutions with zero biases, then the trunk's initialisation."""
        for conv in [stage.proj for stage in self.stem.stages] + list(self.stem.fuse):
            nn.init.xavier_uniform_(conv.weight.view(conv.weight.shape[0], -1))
            nn.init.zeros_(conv.bias)
        self.init_trunk_weights()

    def tokenize(self, x: Tensor, hidden: Tensor | None) -> Tensor:
        """The stem's tokens ``(B, rows * cols, D)`` of features ``(B, C, F, T)``."""
        return self.stem(x, hidden)
