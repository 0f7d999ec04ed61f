"""From mixed waveforms to training samples: features, random 2-s crops, normalisation.

GRAM takes 16 random 200-frame crops of every 10-s clip (1000 frames at hop 320, see
:mod:`hear_gram.features`) and normalises each crop on its own over ``(C, 128, 200)``.
Crops start anywhere in ``[0, N - 200]``, so they never reach past the clip.
"""

from __future__ import annotations

import torch
from torch import Tensor

from hear_gram.features import compute_features, normalize


def random_crops(
    features: Tensor, crops: int, frames: int, generator: torch.Generator | None = None
) -> Tensor:
    """``crops`` random windows of ``frames`` frames from each clip.

    Args:
        features: ``(B, C, M, N)`` with ``N >= frames``.
    Returns:
        ``(B * crops, C, M, frames)``, the crops of clip 0 first.
    """
    b, c, m, n = features.shape
    if n < frames:
        raise ValueError(f"clips of {n} frames are shorter than a {frames}-frame sample")
    starts = torch.randint(
        0, n - frames + 1, (b, crops), generator=generator, device=features.device
    )
    index = starts[..., None] + torch.arange(frames, device=features.device)
    index = index[:, :, None, None, :].expand(b, crops, c, m, frames)
    source = features[:, None].expand(b, crops, c, m, n)
    return torch.gather(source, 4, index).reshape(b * crops, c, m, frames)


def training_samples(
    waves: Tensor, kind: str, crops: int, frames: int, generator: torch.Generator | None = None
) -> Tensor:
    """Normalised crops of a batch of scenes.

    Args:
        waves: ``(B, C, T)`` at 32 kHz, C matching ``kind`` (1, 2 or 4 channels).
        kind: feature kind (``"mono"``, ``"binaural"``, ``"ambisonics"``).
    Returns:
        ``(B * crops, C', 128, frames)`` float32.
    """
    features = compute_features(waves.float(), kind)
    return normalize(random_crops(features, crops, frames, generator))
