"""GRAM-T encoder: a ViT over multi-channel spectrogram patches, its named variants and the
converter from the reference (torchvision-style) weight layout.

Input is one normalised 2-s chunk ``(B, C, 128, 200)``. Patches are 16 x 8 (a frequency-major
8 x 25 grid, for patch masking) or 128 x 2 (a 1 x 100 grid, for time masking); fixed 2-D
sin-cos positions; one CLS token; no channel embedding (channels enter through the patch
convolution).
"""

from __future__ import annotations

import re

from torch import Tensor, nn

from hear_gram import features as feat
from hear_gram.layers import ChunkTransformer, PatchEmbed, patch_grid
from hear_gram.reference import Layout, check_positions, depth_of, patch_args, read_layout

VIT_BASE = {"embed_dim": 768, "depth": 12, "num_heads": 12, "mlp_ratio": 4.0}

# Named variants: the feature pipeline each expects and its encoder arguments.
GRAM_VARIANTS: dict[str, dict] = {
    "gram-binaural": {
        "features": "binaural",
        "encoder": {"in_chans": 2, "patch_size": (16, 8), **VIT_BASE},
        "hub": "labhamlet/gramt-binaural",
    },
    "gram-binaural-time": {
        "features": "binaural",
        "encoder": {"in_chans": 2, "patch_size": (128, 2), **VIT_BASE},
        "hub": "labhamlet/gramt-binaural-time",
    },
    # The release's "-frame" model: patch ("frame") masking in the reference's naming, so
    # the 16 x 8 encoder of gram-binaural; the loader checks the patch against the weights.
    "gram-binaural-frame": {
        "features": "binaural",
        "encoder": {"in_chans": 2, "patch_size": (16, 8), **VIT_BASE},
        "hub": "labhamlet/gramt-binaural-frame",
    },
    "gram-ambisonics": {
        "features": "ambisonics",
        "encoder": {"in_chans": 7, "patch_size": (16, 8), **VIT_BASE},
        "hub": "labhamlet/gramt-ambisonics",
    },
    "gram-clean": {
        "features": "mono",
        "encoder": {"in_chans": 1, "patch_size": (16, 8), **VIT_BASE},
        "hub": "labhamlet/gramt-mono",
    },
}


class GramEncoder(ChunkTransformer):
    """GRAM-T Transformer encoder over one 2-s multi-channel spectrogram chunk.

    Tokens are non-overlapping patches (no channel embedding: channels enter through the
    patch convolution). ``forward`` returns the CLS embedding ``(B, D)`` and per-step
    embeddings ``(B, S, E)``: one step per patch column (``frames_per_step`` spectrogram
    frames), the frequency tokens of that column concatenated (E = rows * D; 6144 for
    16 x 8 patches).
    """

    def __init__(
        self,
        in_chans: int = 2,
        patch_size: tuple[int, int] = (16, 8),
        n_mels: int = feat.N_MELS,
        chunk_frames: int = 200,
        embed_dim: int = 768,
        depth: int = 12,
        num_heads: int = 12,
        mlp_ratio: float = 4.0,
        norm_eps: float = 1e-6,
    ) -> None:
        patch_size = tuple(patch_size)
        grid = patch_grid(patch_size, n_mels, chunk_frames)
        super().__init__(grid, patch_size[1], embed_dim, depth, num_heads, mlp_ratio, norm_eps)
        self.in_chans = in_chans
        self.patch_embed = PatchEmbed(in_chans, embed_dim, patch_size)
        self.init_weights()

    def init_weights(self) -> None:
        """Xavier-uniform patch projection with a zero bias, then the trunk's initialisation."""
        w = self.patch_embed.proj.weight
        nn.init.xavier_uniform_(w.view(w.shape[0], -1))
        nn.init.zeros_(self.patch_embed.proj.bias)
        self.init_trunk_weights()

    def tokenize(self, x: Tensor, hidden: Tensor | None = None) -> Tensor:
        """Patch embeddings ``(B, N, D)``; patches never see each other, so ``hidden`` needs
        no handling here."""
        return self.patch_embed(x)

    def patch_tokens(self, x: Tensor) -> Tensor:
        """Patch embeddings plus positions, ``(B, C, 128, 200)`` to ``(B, N, D)``."""
        return self.tokenize(x) + self.pos_embed[:, 1:]


# --- the reference layout (labhamlet/GRAM-T, torchvision ViT key names) -----------------

REFERENCE_LAYOUT = Layout(
    name="GRAM-T",
    architecture="gram",
    marker="encoder.layers.encoder_layer_",
    renames=(
        (r"encoder\.layers\.encoder_layer_(\d+)\.ln_1\.", r"blocks.\1.norm1."),
        (r"encoder\.layers\.encoder_layer_(\d+)\.ln_2\.", r"blocks.\1.norm2."),
        (r"encoder\.layers\.encoder_layer_(\d+)\.self_attention\.in_proj_", r"blocks.\1.attn.qkv."),
        (
            r"encoder\.layers\.encoder_layer_(\d+)\.self_attention\.out_proj\.",
            r"blocks.\1.attn.proj.",
        ),
        (r"encoder\.layers\.encoder_layer_(\d+)\.mlp\.0\.", r"blocks.\1.mlp.fc1."),
        (r"encoder\.layers\.encoder_layer_(\d+)\.mlp\.3\.", r"blocks.\1.mlp.fc2."),
        (r"encoder\.ln\.", "norm."),
        (r"patch_embed\.proj\.", "patch_embed.proj."),
        (r"cls_token$", "cls_token"),
    ),
    positions="encoder.pos_embedding",
    decoder=re.compile(
        r"mask_token|decoder_pos_embed|(decoder_embed|decoder_blocks|decoder_norm|spec_pred)\..*"
    ),
)


def convert_reference_state_dict(
    state_dict: dict[str, Tensor],
) -> tuple[dict[str, Tensor], dict[str, Tensor], dict]:
    """Map a reference GRAM-T state dict onto :class:`GramEncoder`'s layout.

    Accepts the model at the root or inside wrappers (the Hugging Face runtime's ``model.``
    prefix, ...; see :mod:`hear_gram.reference`). The fixed sin-cos positions and the feature
    buffers are checked against hear_gram's own and dropped; decoder keys are returned
    separately under their reference names (for continued pretraining); any other key is
    an error.

    Returns:
        ``(encoder_state, decoder_state, encoder_args)``, the last inferred from the shapes
        (heads = width / 64, as in ViT-B).
    """
    read = read_layout(state_dict, REFERENCE_LAYOUT)
    encoder = read.encoder
    args = patch_args(encoder)
    width = args["embed_dim"]
    fc1 = encoder.get("blocks.0.mlp.fc1.weight")
    args.update(
        depth=depth_of(encoder),
        num_heads=max(1, width // 64),
        mlp_ratio=fc1.shape[0] / width if fc1 is not None else 4.0,
    )
    check_positions(read, REFERENCE_LAYOUT, args)
    return encoder, read.decoder, args
