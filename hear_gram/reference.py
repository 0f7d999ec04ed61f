"""The GRAM authors' checkpoint key layouts: find the model inside its wrappers, check the
fixed buffers, and split the encoder's keys (renamed to ours) from the decoder's.

The same weights reach users in several wrappers: the reference's Lightning checkpoint
(``["state_dict"]``; keys at the root: ``cls_token``, ``patch_embed.proj.weight``, ...), the
Hugging Face runtime's ``model.safetensors`` (the model under ``model.``, beside the
runtime's own feature buffers ``mel_spec.melspec.*``) and a ``transformers``
``PreTrainedModel`` around such a runtime (one more prefix). The model's root is where its
``cls_token`` key is; every key outside it must be a feature buffer. Each architecture
describes its key names in a :class:`Layout` (GRAM-T in :mod:`hear_gram.gram`, GRAM-M in
:mod:`hear_gram.gram_m`); no key is ever dropped unless the layout names it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import torch
from torch import Tensor

from hear_gram import features as feat
from hear_gram.errors import CheckpointError
from hear_gram.layers import sincos_2d

CLS_KEY = "cls_token"
# Fixed feature buffers of the reference's torchaudio front end (also the runtime's copies).
_FEATURE_BUFFER = re.compile(
    r"(?:.*\.)?(?:melspec|mel_spec\.melspec)\.(spectrogram\.window|mel_scale\.fb)"
)
_FEATURE_VALUES = {
    "spectrogram.window": feat.analysis_window,
    "mel_scale.fb": feat.mel_filterbank,
}


@dataclass(frozen=True)
class Layout:
    """The key names of one reference architecture (relative to the model's root).

    Attributes:
        name: how messages name it (``"GRAM-T"``).
        architecture: the hear_gram architecture its encoder loads into.
        marker: a key prefix only this layout has (tells layouts apart).
        renames: ``(pattern, replacement)`` regular expressions onto hear_gram's encoder keys.
        positions: the key of the fixed sin-cos encoder positions (checked, then dropped).
        decoder: the keys of the pretraining decoder (returned apart, under their names).
        unused: keys the reference builds but never applies (dropped, and reported).
    """

    name: str
    architecture: str
    marker: str
    renames: tuple[tuple[str, str], ...]
    positions: str
    decoder: re.Pattern[str]
    unused: re.Pattern[str] | None = None


@dataclass
class ReferenceState:
    """A reference checkpoint read through its :class:`Layout`."""

    encoder: dict[str, Tensor]  # hear_gram's key names
    decoder: dict[str, Tensor] = field(default_factory=dict)  # reference names
    positions: Tensor | None = None
    root: str = ""
    unused: list[str] = field(default_factory=list)


def model_root(state: dict[str, Tensor]) -> str:
    """The prefix of the model's keys: what precedes its one ``cls_token`` key.

    Raises:
        CheckpointError: no ``cls_token`` key, or several (two models in one file).
    """
    roots = [k[: -len(CLS_KEY)] for k in state if k == CLS_KEY or k.endswith("." + CLS_KEY)]
    if len(roots) != 1:
        found = "no" if not roots else f"{len(roots)} ({sorted(r + CLS_KEY for r in roots)})"
        raise CheckpointError(
            f"a GRAM reference checkpoint has one {CLS_KEY!r} key; this one has {found}: it "
            "is not a GRAM checkpoint, or holds several models"
        )
    return roots[0]


def detect(state: dict[str, Tensor], layouts: list[Layout]) -> Layout | None:
    """The layout whose marker the state's keys carry under the model's root, or None."""
    try:
        root = model_root(state)
    except CheckpointError:
        return None
    for layout in layouts:
        if any(k.startswith(root + layout.marker) for k in state):
            return layout
    return None


def check_buffer(name: str, value: Tensor, expected: Tensor, what: str) -> None:
    """Refuse a fixed buffer that differs from hear_gram's own."""
    if value.shape != expected.shape or not torch.allclose(
        value.float(), expected.float(), rtol=1e-4, atol=1e-5
    ):
        raise CheckpointError(
            f"checkpoint {what} {name!r} (shape {tuple(value.shape)}) differs from hear_gram's "
            f"{tuple(expected.shape)}: the weights were trained with other features or "
            "positions and would give wrong embeddings here"
        )


def read_layout(state: dict[str, Tensor], layout: Layout) -> ReferenceState:
    """Split a reference state dict into encoder (renamed), decoder and positions.

    Raises:
        CheckpointError: a key the layout does not know (all of them named), or a feature
            buffer that differs from hear_gram's.
    """
    root = model_root(state)
    out, unknown = ReferenceState(encoder={}, root=root), []
    for raw_key, value in state.items():
        buffer = _FEATURE_BUFFER.fullmatch(raw_key)
        if buffer:
            check_buffer(raw_key, value, _FEATURE_VALUES[buffer.group(1)](), "feature buffer")
            continue
        if not raw_key.startswith(root):
            unknown.append(raw_key)
            continue
        key = raw_key[len(root) :]
        if key == layout.positions:
            out.positions = value
        elif layout.decoder.fullmatch(key):
            out.decoder[key] = value
        elif layout.unused is not None and layout.unused.fullmatch(key):
            out.unused.append(raw_key)
        else:
            for pattern, replacement in layout.renames:
                if re.match(pattern, key):
                    out.encoder[re.sub(pattern, replacement, key, count=1)] = value
                    break
            else:
                unknown.append(raw_key)
    if unknown:
        raise CheckpointError(
            f"unrecognised keys in a reference {layout.name} checkpoint: {unknown}"
        )
    if "patch_embed.proj.weight" not in out.encoder:
        raise CheckpointError(
            f"reference {layout.name} checkpoint has no {root + 'patch_embed.proj.weight'!r}"
        )
    return out


def patch_args(encoder: dict[str, Tensor]) -> dict:
    """``in_chans``, ``patch_size`` and ``embed_dim`` from the patch convolution."""
    proj = encoder["patch_embed.proj.weight"]
    return {
        "in_chans": proj.shape[1],
        "patch_size": (proj.shape[2], proj.shape[3]),
        "embed_dim": proj.shape[0],
    }


def check_positions(read: ReferenceState, layout: Layout, args: dict) -> None:
    """The checkpoint's fixed positions must be hear_gram's for its grid and width."""
    if read.positions is None:
        return
    grid = (feat.N_MELS // args["patch_size"][0], 200 // args["patch_size"][1])
    expected = sincos_2d(args["embed_dim"], grid)
    check_buffer(read.root + layout.positions, read.positions, expected, "position embedding")


def depth_of(encoder: dict[str, Tensor]) -> int:
    """The number of ``blocks.N`` in hear_gram key names."""
    return len({k.split(".")[1] for k in encoder if k.startswith("blocks.")})
