"""The pretraining model: a hear_gram GRAM encoder (GRAM-T or GRAM-M), the multi-window
decoder and the loss.

One 2-s sample ``(B, C, 128, 200)``, already normalised, is cut into patches; the encoder
sees the visible ones (``forward_tokens(x, keep)``), the decoder reconstructs all, and the
loss is the mean squared error over the masked patches, times the number of input
channels (as the reference scales it).
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

from torch import Tensor, nn

from hear_gram.checkpoint import load_encoder, load_reference, load_state_strict
from hear_gram.errors import CheckpointError
from hear_gram.features import FEATURE_CHANNELS
from hear_gram.layers import ChunkEncoder
from hear_gram.variants import REFERENCE_CONVERTERS, create_encoder, get_variant
from training.config import MambaConfig, ModelConfig
from training.decoder import MultiWindowDecoder, convert_reference_decoder
from training.masking import patchify


class MaskedAutoencoder(nn.Module):
    """GRAM encoder plus MW-MAE decoder; ``forward`` returns the reconstruction loss."""

    def __init__(self, encoder: ChunkEncoder, decoder: MultiWindowDecoder) -> None:
        super().__init__()
        self.encoder = encoder
        self.decoder = decoder
        self.patch_size = encoder.patch_embed.patch_size

    def forward(self, x: Tensor, keep: Tensor, masked: Tensor) -> Tensor:
        """Loss of one batch.

        Args:
            x: ``(B, C, 128, 200)`` normalised features.
            keep: ``(B, K)`` indices of the visible patches.
            masked: ``(B, N)`` bool, the patches whose reconstruction is scored.
        Returns:
            Scalar float32 loss.
        """
        visible = self.encoder.forward_tokens(x, keep=keep)[:, 1:]
        pred = self.decoder(visible, keep).float()
        target = patchify(x, self.patch_size).float()
        per_patch = (pred - target).square().mean(dim=-1)
        weight = masked.to(per_patch.dtype)
        return (per_patch * weight).sum() / weight.sum() * x.shape[1]


def encoder_args(model: ModelConfig, mamba: MambaConfig | None = None) -> dict:
    """The encoder arguments of a config (what export writes): GRAM-T's ViT, or GRAM-M's
    Mamba-2 blocks from the ``mamba`` section (its defaults when None)."""
    variant = get_variant(model.variant)
    args = {
        "in_chans": FEATURE_CHANNELS[variant["features"]],
        "patch_size": tuple(variant["encoder"]["patch_size"]),
        "embed_dim": model.embed_dim,
        "depth": model.depth,
    }
    if variant["architecture"] == "gram-m":
        return {**args, **dataclasses.asdict(mamba or MambaConfig())}
    return {**args, "num_heads": model.num_heads, "mlp_ratio": model.mlp_ratio}


def build_model(model: ModelConfig, mamba: MambaConfig | None = None) -> MaskedAutoencoder:
    """A freshly initialised encoder and decoder for ``model`` (and ``mamba``, GRAM-M)."""
    args = encoder_args(model, mamba)
    encoder = create_encoder(get_variant(model.variant)["architecture"], args)
    decoder = MultiWindowDecoder(
        grid=encoder.grid,
        encoder_dim=encoder.embed_dim,
        patch_values=args["in_chans"] * args["patch_size"][0] * args["patch_size"][1],
        dim=model.decoder_dim,
        depth=model.decoder_depth,
        windows=model.decoder_windows,
        mlp_ratio=model.decoder_mlp_ratio,
    )
    return MaskedAutoencoder(encoder, decoder)


def init_from(model: MaskedAutoencoder, ref: str, variant: str) -> str:
    """Load pretrained weights before training starts.

    ``ref`` is a file: a reference GRAM-T or GRAM-M checkpoint of the variant's
    architecture (``.safetensors``, or a Lightning/PyTorch file read with
    ``weights_only=True``) whose encoder and decoder are both loaded strictly (GRAM-M's
    ``decoder_v`` blocks are GRAM-T's ``decoder_blocks``); or anything else
    :func:`hear_gram.checkpoint.load_encoder` takes (a checkpoint folder, a Hub reference):
    the encoder is loaded, the decoder keeps its initial weights.

    Returns:
        A one-line description of what was loaded.
    Raises:
        CheckpointError: the weights do not fit the model (every mismatched key named).
    """
    path = Path(ref)
    if path.is_file():
        state = load_reference(path)
        architecture = get_variant(variant)["architecture"]
        encoder_state, decoder_state, _ = REFERENCE_CONVERTERS[architecture](state)
        decoder_state = {
            re.sub(r"^decoder_v\.", "decoder_blocks.", k): v for k, v in decoder_state.items()
        }
        load_state_strict(model.encoder, encoder_state, f"{ref} (reference encoder)")
        if not decoder_state:
            raise CheckpointError(
                f"{ref} holds no decoder weights (a reference checkpoint for continued "
                "pretraining needs decoder_* keys); to start from its encoder only, convert "
                "it with `python -m hear_gram.convert` and pass the folder"
            )
        decoder_state = convert_reference_decoder(decoder_state, model.decoder)
        load_state_strict(model.decoder, decoder_state, f"{ref} (reference decoder)")
        return f"encoder and decoder from reference checkpoint {ref}"
    encoder, _ = load_encoder(ref, variant)
    load_state_strict(model.encoder, encoder.state_dict(), f"{ref} (encoder)")
    return f"encoder from hear_gram checkpoint {ref}; decoder freshly initialised"


def parameter_count(module: nn.Module) -> int:
    """Number of parameters of ``module``."""
    return sum(p.numel() for p in module.parameters())
