"""Random patch masking for MAE pretraining, and the patch layout of the targets.

GRAM masks uniformly at random 80 % of the patches of each 2-s sample: 160 of the 200
16 x 8 patches ("patch-based"), or 80 of the 100 128 x 2 patches ("time-based": each patch
is a whole 20-ms column, so masking patches masks time). Both are the same operation on
the frequency-major patch sequence; the patch size decides which.
"""

from __future__ import annotations

import torch
from torch import Tensor


def num_visible(num_patches: int, mask_ratio: float) -> int:
    """Patches left visible: ``num_patches - round(num_patches * mask_ratio)`` (40 of 200)."""
    visible = num_patches - round(num_patches * mask_ratio)
    if not 0 < visible < num_patches:
        raise ValueError(f"mask ratio {mask_ratio} leaves {visible} of {num_patches} visible")
    return visible


def random_masking(
    batch: int,
    num_patches: int,
    mask_ratio: float,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> tuple[Tensor, Tensor]:
    """Draw an independent uniform random mask per sample.

    Returns:
        ``keep`` ``(B, K)`` int64 indices of the visible patches (ascending) and ``masked``
        ``(B, N)`` bool, True where a patch is hidden (its reconstruction is scored).
    """
    scores = torch.rand(batch, num_patches, generator=generator, device=device)
    order = scores.argsort(dim=1)
    keep = order[:, : num_visible(num_patches, mask_ratio)].sort(dim=1).values
    masked = torch.ones(batch, num_patches, dtype=torch.bool, device=scores.device)
    masked.scatter_(1, keep, False)
    return keep, masked


def patchify(x: Tensor, patch_size: tuple[int, int]) -> Tensor:
    """Cut spectrograms into the encoder's patches, as prediction targets.

    Args:
        x: ``(B, C, F, T)``.
    Returns:
        ``(B, N, C * p_f * p_t)``: patches in frequency-major order (token ``f * T' + t``,
        as :class:`hear_gram.layers.PatchEmbed`), each flattened channel, then frequency,
        then time (the layout of the patch convolution's weights).
    """
    b, c, f, t = x.shape
    pf, pt = patch_size
    x = x.reshape(b, c, f // pf, pf, t // pt, pt)
    return x.permute(0, 2, 4, 1, 3, 5).reshape(b, (f // pf) * (t // pt), c * pf * pt)
