"""2-second chunk aggregation: features of any length through a fixed-size chunk encoder.

A file's frames are cut into chunks of ``encoder.chunk_frames`` (200 frames = 2 s); the last
chunk is padded. Each chunk is normalised over its valid frames only, padded frames are set
to the normalised mean and masked out of attention, and the outputs of padded steps are
dropped, so no embedding depends on how much padding its chunk got. Features are computed
segment by segment and chunks go through the encoder in batches of at most
``batch_chunks``, so memory is bounded by the batch, not by the duration.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from hear_gram import features as feat

SEGMENT_CHUNKS = 32


def step_timestamps(num_steps: int, frames_per_step: int, device: torch.device) -> Tensor:
    """Centre of each encoder step in milliseconds: ``(num_steps,)``.

    Step ``j`` covers frames ``[j * f, (j + 1) * f)`` and frame ``i`` is centred on
    ``i * 10`` ms, so the step is centred on ``(j * f + (f - 1) / 2) * 10`` ms.
    """
    hop_ms = 1000.0 * feat.HOP / feat.SAMPLE_RATE
    j = torch.arange(num_steps, device=device, dtype=torch.float32)
    return (j * frames_per_step + (frames_per_step - 1) / 2) * hop_ms


Reader = Callable[[int, int], Tensor]


def iter_chunks(
    read: Reader,
    num_samples: int,
    kind: str,
    window: Tensor,
    fb: Tensor,
    chunk_frames: int,
    segment_chunks: int = SEGMENT_CHUNKS,
    log2_gain: int = 0,
) -> Iterator[tuple[Tensor, Tensor]]:
    """Normalised feature chunks of one waveform, computed segment by segment.

    Args:
        read: ``read(start, stop)`` returns samples ``[start, stop)`` of the waveform at
            32 kHz, ``(C, stop - start)`` (a slice, or a span resampled on demand).
        num_samples: the waveform's length at 32 kHz.
        log2_gain: ``read`` gives the waveform scaled by ``2^-log2_gain``; the features are
            those of the unscaled one (:func:`hear_gram.features.safe_gain_exponent`).
    Yields:
        ``(chunks, valid)``: ``(K, C', 128, chunk_frames)`` and ``(K,)`` valid frame counts;
        the same values as features of the whole waveform cut into chunks.
    """
    total = feat.num_frames(num_samples)
    half = feat.N_FFT // 2
    segment = segment_chunks * chunk_frames
    for start in range(0, total, segment):
        stop = min(total, start + segment)
        # Frames [start, stop) read samples [start * HOP - half, (stop - 1) * HOP + half],
        # reflected at the waveform's ends (the center=True padding).
        first, last = start * feat.HOP - half, (stop - 1) * feat.HOP + half
        piece = read(max(first, 0), min(last, num_samples))
        pads = (max(0, -first), max(0, last - num_samples))
        if any(pads):
            piece = nn.functional.pad(piece[None], pads, mode="reflect")[0]
        x = feat.features_from_padded(piece, kind, window, fb, log2_gain)
        count = math.ceil((stop - start) / chunk_frames)
        x = nn.functional.pad(x, (0, count * chunk_frames - (stop - start)))
        chunks = x.reshape(*x.shape[:2], count, chunk_frames).permute(2, 0, 1, 3)
        offsets = torch.arange(count, device=x.device) * chunk_frames
        valid = (stop - start - offsets).clamp(max=chunk_frames)
        yield feat.normalize(chunks, valid), valid


@dataclass
class ChunkOutputs:
    """Encoder outputs of a batch of equal-length files."""

    steps: Tensor | None  # (B, S, E) every step embedding, when asked for
    step_mean: Tensor  # (B, E) mean over the steps
    cls_mean: Tensor  # (B, D) CLS tokens of the chunks, weighted by their valid frames


def _batched(items: Iterator, size: int) -> Iterator[list]:
    batch = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def embed_files(
    encoder: nn.Module,
    readers: list[Reader],
    num_samples: int,
    kind: str,
    window: Tensor,
    fb: Tensor,
    batch_chunks: int,
    keep_steps: bool,
    log2_gains: list[int] | None = None,
) -> ChunkOutputs:
    """Run every 2-s chunk of every file through ``encoder`` in batches of ``batch_chunks``.

    Args:
        encoder: maps ``(B, C', 128, chunk_frames)`` and ``valid_steps (B,)`` to
            ``(cls (B, D), steps (B, S, E))``; has ``chunk_frames``, ``frames_per_step``,
            ``frame_dim`` and ``embed_dim``.
        readers: one per file; ``read(start, stop)`` gives its samples at 32 kHz.
        num_samples: the files' length at 32 kHz.
        keep_steps: keep every step embedding (timestamp embeddings) or only their mean.
        log2_gains: per file, the ``log2_gain`` of :func:`iter_chunks` (default all 0).

    Chunks enter the encoder in the dtype of its parameters (bf16 for a bf16 encoder);
    outputs are float32 on the device of ``window``.
    """
    fps = encoder.frames_per_step
    num_steps = math.ceil(feat.num_frames(num_samples) / fps)
    device, files = window.device, len(readers)
    steps_out = (
        torch.empty(files, num_steps, encoder.frame_dim, device=device) if keep_steps else None
    )
    step_sum = torch.zeros(files, encoder.frame_dim, device=device)
    cls_sum = torch.zeros(files, encoder.embed_dim, device=device)
    written = [0] * files

    gains = log2_gains or [0] * files

    def chunks() -> Iterator[tuple[int, Tensor, int]]:
        for index, (read, gain) in enumerate(zip(readers, gains, strict=True)):
            for block, valid in iter_chunks(
                read, num_samples, kind, window, fb, encoder.chunk_frames, log2_gain=gain
            ):
                yield from ((index, c, int(v)) for c, v in zip(block, valid, strict=True))

    dtype = next(encoder.parameters()).dtype
    for batch in _batched(chunks(), batch_chunks):
        x = torch.stack([c for _, c, _ in batch]).to(dtype)
        kept = [math.ceil(v / fps) for _, _, v in batch]
        partial = any(v < encoder.chunk_frames for _, _, v in batch)
        cls, steps = encoder(x, torch.tensor(kept, device=x.device) if partial else None)
        cls, steps = cls.float(), steps.float()
        for i, (owner, _, frames) in enumerate(batch):
            valid_steps = steps[i, : kept[i]]
            if steps_out is not None:
                steps_out[owner, written[owner] : written[owner] + kept[i]] = valid_steps
            written[owner] += kept[i]
            step_sum[owner] += valid_steps.sum(dim=0)
            cls_sum[owner] += cls[i] * frames
    return ChunkOutputs(steps_out, step_sum / num_steps, cls_sum / feat.num_frames(num_samples))
