"""GRAM-M encoder: Mamba-2 blocks over multi-channel spectrogram patches, its named variants
and the converter from the reference (labhamlet/GRAM-M) weight layout.

The front end is GRAM-T's (features, LayerNorm over the chunk, patch convolution, CLS token
first, fixed 2-D sin-cos positions, 2-s chunks); the trunk is a stack of pre-norm Mamba-2
blocks without MLP (:class:`hear_gram.mamba2.MambaBlock`) and a final norm, as the
reference's ``MixerModel`` with ``d_intermediate=0``. The scan runs over the frequency-major
token sequence, CLS first, causally: token ``i`` sees tokens ``<= i``. So the CLS token,
first, sees no audio and makes no scene embedding; the HEAR API refuses
``scene_embedding="cls"`` for GRAM-M.

Named variants have 16 blocks of width 768 with LayerNorm (the defaults of the reference's
``GRAMM`` class). The reference's training script builds its "base" size with 24 blocks,
and its model config asks for RMSNorm: a checkpoint's depth and norm are read from its
keys, so either loads.
"""

from __future__ import annotations

import re

import torch
from torch import Tensor, nn

from hear_gram import features as feat
from hear_gram.errors import CheckpointError
from hear_gram.layers import ChunkEncoder, PatchEmbed, patch_grid
from hear_gram.mamba2 import MambaBlock, make_norm
from hear_gram.reference import Layout, check_positions, depth_of, patch_args, read_layout

MAMBA_BASE = {
    "embed_dim": 768,
    "depth": 16,
    "d_state": 128,
    "d_conv": 4,
    "expand": 2,
    "headdim": 64,
    "ngroups": 1,
    "norm": "layernorm",
}

GRAM_M_VARIANTS: dict[str, dict] = {
    "gram-m-binaural": {
        "features": "binaural",
        "encoder": {"in_chans": 2, "patch_size": (16, 8), **MAMBA_BASE},
        "hub": None,
    },
    "gram-m-binaural-time": {
        "features": "binaural",
        "encoder": {"in_chans": 2, "patch_size": (128, 2), **MAMBA_BASE},
        "hub": None,
    },
    "gram-m-ambisonics": {
        "features": "ambisonics",
        "encoder": {"in_chans": 7, "patch_size": (16, 8), **MAMBA_BASE},
        "hub": None,
    },
}


class GramMEncoder(ChunkEncoder):
    """GRAM-M: patch embeddings, then pre-norm Mamba-2 blocks (causal over the
    frequency-major sequence, CLS first) and a final norm.

    ``forward`` returns the CLS output ``(B, D)`` (it sees no audio in a causal trunk) and
    per-step embeddings ``(B, S, rows * D)`` as GRAM-T's. Padded token columns are run
    after every real token, so no real token's output depends on them.
    """

    causal = True

    def __init__(
        self,
        in_chans: int = 2,
        patch_size: tuple[int, int] = (16, 8),
        n_mels: int = feat.N_MELS,
        chunk_frames: int = 200,
        embed_dim: int = 768,
        depth: int = 16,
        d_state: int = 128,
        d_conv: int = 4,
        expand: int = 2,
        headdim: int = 64,
        ngroups: int = 1,
        norm: str = "layernorm",
        norm_eps: float = 1e-5,
        chunk_size: int = 256,
    ) -> None:
        patch_size = tuple(patch_size)
        grid = patch_grid(patch_size, n_mels, chunk_frames)
        mixer = {"d_state": d_state, "d_conv": d_conv, "expand": expand, "headdim": headdim}
        blocks = nn.ModuleList(
            MambaBlock(embed_dim, norm, norm_eps, ngroups=ngroups, chunk_size=chunk_size, **mixer)
            for _ in range(depth)
        )
        super().__init__(
            grid, patch_size[1], embed_dim, blocks, make_norm(norm, embed_dim, norm_eps)
        )
        self.in_chans = in_chans
        self.depth = depth
        self.patch_embed = PatchEmbed(in_chans, embed_dim, patch_size)
        self.init_weights()

    def init_weights(self) -> None:
        """The reference's initialisation: CLS ``N(0, 0.02)``, mixers as mamba_ssm
        initialises them, output projections rescaled by ``1 / sqrt(depth)`` (GPT-2)."""
        nn.init.normal_(self.cls_token, std=0.02)
        with torch.no_grad():
            for block in self.blocks:
                nn.init.kaiming_uniform_(block.mixer.out_proj.weight, a=5**0.5)
                block.mixer.out_proj.weight /= len(self.blocks) ** 0.5

    def tokenize(self, x: Tensor, hidden: Tensor | None = None) -> Tensor:
        """Patch embeddings ``(B, N, D)``; patches never see each other, so ``hidden`` needs
        no handling here."""
        return self.patch_embed(x)

    def run_block(self, block: nn.Module, h: Tensor, mask: Tensor | None) -> Tensor:
        """A Mamba block takes no attention mask: padding is ordered last instead."""
        return block(h)


# --- the reference layout (labhamlet/GRAM-M: mamba_ssm MixerModel key names) --------------

REFERENCE_LAYOUT = Layout(
    name="GRAM-M",
    architecture="gram-m",
    marker="encoder_v.layers.",
    renames=(
        (r"encoder_v\.layers\.(\d+)\.mixer\.", r"blocks.\1.mixer."),
        (r"encoder_v\.layers\.(\d+)\.norm\.", r"blocks.\1.norm."),
        (r"encoder_v\.norm_f\.", "norm."),
        (r"patch_embed\.proj\.", "patch_embed.proj."),
        (r"cls_token$", "cls_token"),
    ),
    positions="encoder_pos_embed",
    decoder=re.compile(
        r"mask_token|decoder_pos_embed|(decoder_embed|decoder_v|decoder_norm|spec_pred)\..*"
    ),
    # GRAMM builds a LayerNorm ``encoder_norm`` that its forward pass never applies.
    unused=re.compile(r"encoder_norm\.(weight|bias)"),
)


def mamba_args(encoder: dict[str, Tensor], width: int) -> dict:
    """Mamba-2 sizes from a block's parameter shapes (``ngroups`` 1 assumed: shapes cannot
    tell groups from state size; a hear-gram ``config.json`` records it)."""
    try:
        d_inner = encoder["blocks.0.mixer.out_proj.weight"].shape[1]
        nheads = encoder["blocks.0.mixer.A_log"].shape[0]
        conv = encoder["blocks.0.mixer.conv1d.weight"]
    except KeyError as error:
        raise CheckpointError(f"reference GRAM-M checkpoint lacks block 0's {error}") from None
    if d_inner % width or d_inner % nheads or (conv.shape[0] - d_inner) % 2:
        raise CheckpointError(
            f"reference GRAM-M block shapes do not fit a Mamba-2 mixer of width {width}: "
            f"out_proj {tuple(encoder['blocks.0.mixer.out_proj.weight'].shape)}, A_log "
            f"({nheads},), conv1d {tuple(conv.shape)}"
        )
    return {
        "expand": d_inner // width,
        "headdim": d_inner // nheads,
        "d_state": (conv.shape[0] - d_inner) // 2,
        "d_conv": conv.shape[-1],
        "ngroups": 1,
        "norm": "layernorm" if "norm.bias" in encoder else "rmsnorm",
    }


def convert_reference_state_dict(
    state_dict: dict[str, Tensor],
) -> tuple[dict[str, Tensor], dict[str, Tensor], dict]:
    """Map a reference GRAM-M state dict (Lightning ``state_dict`` or a flat file, at the
    root or inside wrappers) onto :class:`GramMEncoder`'s layout.

    The fixed positions (``encoder_pos_embed``) and feature buffers are checked and dropped,
    the unused ``encoder_norm`` is dropped, decoder keys are returned apart.

    Returns:
        ``(encoder_state, decoder_state, encoder_args)``, the arguments read off the shapes.
    """
    read = read_layout(state_dict, REFERENCE_LAYOUT)
    args = patch_args(read.encoder)
    args.update(depth=depth_of(read.encoder), **mamba_args(read.encoder, args["embed_dim"]))
    check_positions(read, REFERENCE_LAYOUT, args)
    return read.encoder, read.decoder, args
