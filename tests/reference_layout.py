"""An independent model in the reference GRAM-T layout (torchvision ViT key names), used as a
numerical oracle: our converter must map its weights onto GramEncoder with equal outputs."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from hear_gram import features as feat
from hear_gram.layers import sincos_2d


class ReferenceBlock(nn.Module):
    """torchvision ``EncoderBlock`` structure: ln_1, self_attention, ln_2, mlp.{0,3}."""

    def __init__(self, dim: int, heads: int, hidden: int) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(dim, eps=1e-6)
        self.self_attention = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.ln_2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = nn.Sequential(
            nn.Linear(dim, hidden),
            nn.GELU(),
            nn.Dropout(0.0),
            nn.Linear(hidden, dim),
            nn.Dropout(0.0),
        )

    def forward(self, x: Tensor) -> Tensor:
        h = self.ln_1(x)
        x = x + self.self_attention(h, h, h, need_weights=False)[0]
        return x + self.mlp(self.ln_2(x))


class ReferenceEncoder(nn.Module):
    def __init__(self, dim: int, depth: int, heads: int) -> None:
        super().__init__()
        self.layers = nn.Sequential()
        for i in range(depth):
            self.layers.add_module(f"encoder_layer_{i}", ReferenceBlock(dim, heads, 4 * dim))
        self.ln = nn.LayerNorm(dim, eps=1e-6)


class ReferenceGramT(nn.Module):
    """Patch conv, CLS token, ``encoder.pos_embedding`` (fixed sin-cos), torchvision blocks."""

    def __init__(self, in_chans: int, patch: tuple[int, int], dim: int, depth: int, heads: int):
        super().__init__()
        self.patch_embed = nn.Module()
        self.patch_embed.proj = nn.Conv2d(in_chans, dim, patch, patch)
        self.grid = (feat.N_MELS // patch[0], 200 // patch[1])
        self.cls_token = nn.Parameter(torch.randn(1, 1, dim) * 0.02)
        self.encoder = ReferenceEncoder(dim, depth, heads)
        self.encoder.pos_embedding = nn.Parameter(sincos_2d(dim, self.grid), requires_grad=False)

    def forward(self, x: Tensor) -> Tensor:
        tokens = self.patch_embed.proj(x).flatten(2).transpose(1, 2)
        h = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), tokens], dim=1)
        h = h + self.encoder.pos_embedding
        return self.encoder.ln(self.encoder.layers(h))


def reference_state_dict(model: ReferenceGramT, prefix: str = "model.") -> dict[str, Tensor]:
    """The model's weights as the Hugging Face release stores them: prefixed keys, the mel
    front end's buffers (also the wrapper's copies) and decoder keys."""
    state = {prefix + k: v.detach().clone() for k, v in model.state_dict().items()}
    for owner in ("melspec.", "mel_spec.melspec."):
        state[prefix * (owner == "melspec.") + owner + "spectrogram.window"] = (
            feat.analysis_window()
        )
        state[prefix * (owner == "melspec.") + owner + "mel_scale.fb"] = feat.mel_filterbank()
    state[prefix + "mask_token"] = torch.zeros(1, 1, 16)
    state[prefix + "decoder_embed.weight"] = torch.randn(16, model.cls_token.shape[-1])
    state[prefix + "decoder_blocks.0.wmha.attn_heads.0.relative_position_bias_table"] = torch.randn(
        3, 1
    )
    return state
