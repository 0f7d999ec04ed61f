"""Registry of named model variants: architecture, feature pipeline and encoder arguments."""

from __future__ import annotations

import copy

import torch
from torch import nn

from hear_gram import gram, gram_m
from hear_gram.cat import CAT_VARIANTS, CatEncoder
from hear_gram.gram import GRAM_VARIANTS, GramEncoder
from hear_gram.gram_m import GRAM_M_VARIANTS, GramMEncoder

ARCHITECTURES: dict[str, type[nn.Module]] = {
    "gram": GramEncoder,
    "gram-m": GramMEncoder,
    "cat": CatEncoder,
}
# CAT has no released checkpoints and no published key layout, so no converter.
REFERENCE_CONVERTERS = {
    "gram": gram.convert_reference_state_dict,
    "gram-m": gram_m.convert_reference_state_dict,
}
REFERENCE_LAYOUTS = [gram.REFERENCE_LAYOUT, gram_m.REFERENCE_LAYOUT]
VARIANTS: dict[str, dict] = {
    **{name: {"architecture": "gram", **cfg} for name, cfg in GRAM_VARIANTS.items()},
    **{name: {"architecture": "gram-m", **cfg} for name, cfg in GRAM_M_VARIANTS.items()},
    **{name: {"architecture": "cat", **cfg} for name, cfg in CAT_VARIANTS.items()},
}


def get_variant(name: str) -> dict:
    """A deep copy of a variant's configuration; raises ``KeyError`` naming the known ones."""
    if name not in VARIANTS:
        raise KeyError(f"unknown variant {name!r}; known variants: {sorted(VARIANTS)}")
    return copy.deepcopy(VARIANTS[name])


def create_encoder(architecture: str, encoder_args: dict, seed: int | None = None) -> nn.Module:
    """Build an encoder; with ``seed`` its random initialisation is reproducible."""
    if architecture not in ARCHITECTURES:
        raise KeyError(f"unknown architecture {architecture!r}; known: {sorted(ARCHITECTURES)}")
    if seed is None:
        return ARCHITECTURES[architecture](**encoder_args)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return ARCHITECTURES[architecture](**encoder_args)
