"""What the training tests share: toy-run overrides, weights written in the reference GRAM-T
layout."""

import re
from pathlib import Path

import torch

from hear_gram.layers import sincos_2d
from training.decoder import MultiWindowDecoder
from training.mae import MaskedAutoencoder


def toy_overrides(data: Path, **fields) -> list[str]:
    """``section.field=value`` overrides pointing a toy config at ``data`` (the
    ``toy_data`` fixture), logging every step, no TensorBoard; ``fields`` override them."""
    base = {
        "data.train": data / "shards",
        "scenes.rirs": data / "rirs",
        "scenes.noise": data / "noise",
        "data.clip_seconds": 2.5,
        "train.crops_per_clip": 2,
        "train.log_every": 1,
        "train.tensorboard": False,
    }
    return [f"{k}={v}" for k, v in {**base, **fields}.items()]


_ENCODER = [
    (r"blocks\.(\d+)\.norm1\.", r"encoder.layers.encoder_layer_\1.ln_1."),
    (r"blocks\.(\d+)\.norm2\.", r"encoder.layers.encoder_layer_\1.ln_2."),
    (r"blocks\.(\d+)\.attn\.qkv\.", r"encoder.layers.encoder_layer_\1.self_attention.in_proj_"),
    (r"blocks\.(\d+)\.attn\.proj\.", r"encoder.layers.encoder_layer_\1.self_attention.out_proj."),
    (r"blocks\.(\d+)\.mlp\.fc1\.", r"encoder.layers.encoder_layer_\1.mlp.0."),
    (r"blocks\.(\d+)\.mlp\.fc2\.", r"encoder.layers.encoder_layer_\1.mlp.3."),
    (r"norm\.", "encoder.ln."),
]


def reference_decoder_state(decoder: MultiWindowDecoder, flip_index: bool = False) -> dict:
    """``decoder``'s weights under the reference key names and shapes.

    With ``flip_index`` the reference index uses the other convention (``j - i + w - 1``,
    the table stored reversed), which must convert to the same bias.
    """
    state = {
        "mask_token": decoder.mask_token.clone(),
        "decoder_pos_embed": decoder.pos_embed.clone(),
        "decoder_embed.weight": decoder.embed.weight.clone(),
        "decoder_embed.bias": decoder.embed.bias.clone(),
        "decoder_norm.weight": decoder.norm.weight.clone(),
        "decoder_norm.bias": decoder.norm.bias.clone(),
        "spec_pred.0.weight": decoder.head.weight.clone(),
        "spec_pred.0.bias": decoder.head.bias.clone(),
    }
    for i, block in enumerate(decoder.blocks):
        p = f"decoder_blocks.{i}."
        for name in ("norm1", "norm2", "mlp.fc1", "mlp.fc2"):
            module = block.get_submodule(name)
            state[p + name + ".weight"] = module.weight.clone()
            state[p + name + ".bias"] = module.bias.clone()
        for name in ("qkv", "proj"):
            module = block.attn.get_submodule(name)
            state[p + f"wmha.{name}.weight"] = module.weight.clone()
            state[p + f"wmha.{name}.bias"] = module.bias.clone()
        for h, w in enumerate(decoder.windows):
            if not w:
                continue
            table = block.attn.bias_tables[str(h)].detach().clone()
            pos = torch.arange(w)
            if flip_index:
                index = pos[None, :] - pos[:, None] + w - 1
                table = table.flip(0)
            else:
                index = pos[:, None] - pos[None, :] + w - 1
            head = p + f"wmha.attn_heads.{h}."
            state[head + "relative_position_bias_table"] = table[:, None]
            state[head + "relative_position_index"] = index
    return {k: v.detach() for k, v in state.items()}


def reference_state_dict(model: MaskedAutoencoder) -> dict:
    """The whole pretraining model under the reference names (no ``model.`` prefix)."""
    state = {}
    for key, value in model.encoder.state_dict().items():
        for pattern, replacement in _ENCODER:
            if re.match(pattern, key):
                key = re.sub(pattern, replacement, key, count=1)
                break
        state[key] = value.detach().clone()
    encoder = model.encoder
    state["encoder.pos_embedding"] = sincos_2d(encoder.embed_dim, encoder.grid)
    state.update(reference_decoder_state(model.decoder))
    return state
