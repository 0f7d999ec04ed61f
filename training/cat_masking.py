"""Inverse block masking on a token grid (data2vec 2.0 / EAT style).

Square blocks of ``block`` x ``block`` tokens around random centres are *kept*; everything
else is masked. The number of centres is chosen so that blocks cover about
``1 - mask_ratio + adjust`` of the grid (overlaps and borders lose some), then every row is
brought to exactly ``round(N * mask_ratio)`` masked tokens by dropping random kept tokens or
keeping random extra ones, so all samples of a batch encode the same number of tokens.
Visible tokens thus come in contiguous patches, and the student must predict whole regions.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def inverse_block_mask(
    batch: int,
    grid: tuple[int, int],
    mask_ratio: float = 0.8,
    block: int = 5,
    adjust: float = 0.07,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> Tensor:
    """Masks for ``batch`` samples of a frequency-major ``(rows, cols)`` grid.

    Args:
        mask_ratio: fraction of tokens masked, in (0, 1).
        block: side of the kept blocks (odd: a block is centred on its centre token).
        adjust: extra coverage asked of the blocks, to make up for their overlaps.
        generator: a generator on ``device``, for reproducible masks.
    Returns:
        ``(batch, rows * cols)`` boolean, True = masked; every row has exactly
        ``round(rows * cols * mask_ratio)`` True entries.
    """
    if not 0.0 < mask_ratio < 1.0:
        raise ValueError(f"mask_ratio must be in (0, 1), got {mask_ratio}")
    if block < 1 or block % 2 == 0:
        raise ValueError(f"block must be a positive odd number, got {block}")
    rows, cols = grid
    n = rows * cols
    num_masked = round(n * mask_ratio)
    if not 0 < num_masked < n:
        raise ValueError(f"mask_ratio {mask_ratio} masks none or all of {n} tokens")
    centres_per_sample = max(1, round(n * (1.0 - mask_ratio + adjust) / block**2))
    centres = torch.zeros(batch, n, device=device)
    picks = torch.randint(0, n, (batch, centres_per_sample), generator=generator, device=device)
    centres.scatter_(1, picks, 1.0)
    kept = F.max_pool2d(
        centres.view(batch, 1, rows, cols), block, stride=1, padding=block // 2
    ).view(batch, n)
    # Kept-block tokens first, in random order, then the others: the first n - num_masked stay.
    score = kept + torch.rand(batch, n, generator=generator, device=device)
    visible = score.topk(n - num_masked, dim=1).indices
    return torch.ones(batch, n, dtype=torch.bool, device=device).scatter_(1, visible, False)


def keep_indices(mask: Tensor) -> Tensor:
    """Ascending indices of the unmasked tokens, ``(B, K)``, of a mask with the same count of
    unmasked tokens in every row."""
    counts = (~mask).sum(dim=1)
    if not bool((counts == counts[0]).all()):
        raise ValueError("every row of the mask must have the same number of unmasked tokens")
    return (~mask).nonzero()[:, 1].view(mask.shape[0], -1)
