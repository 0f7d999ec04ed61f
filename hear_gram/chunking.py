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
from collections.abc import Iterator

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


def iter_chunks(
    wave: Tensor,
    kind: str,
    window: Tensor,
    fb: Tensor,
    chunk_frames: int,
    segment_chunks: int = SEGMENT_CHUNKS,
) -> Iterator[tuple[Tensor, Tensor]]:
    """Normalised feature chunks of one waveform, computed segment by segment.

    Args:
        wave: ``(C, T)`` at 32 kHz.
    Yields:
        ``(chunks, valid)``: ``(K, C', 128, chunk_frames)`` and ``(K,)`` valid frame counts.
    """
    total = feat.num_frames(wave.shape[-1])
    padded = feat.pad_for_frames(wave)
    segment = segment_chunks * chunk_frames
    for start in range(0, total, segment):
        stop = min(total, start + segment)
        x = feat.features_from_padded(padded[..., feat.frame_slice(start, stop)], kind, window, fb)
        count = math.ceil((stop - start) / chunk_frames)
        x = nn.functional.pad(x, (0, count * chunk_frames - (stop - start)))
        chunks = x.reshape(*x.shape[:2], count, chunk_frames).permute(2, 0, 1, 3)
        offsets = torch.arange(count, device=wave.device) * chunk_frames
        valid = (stop - start - offsets).clamp(max=chunk_frames)
        yield feat.normalize(chunks, valid), valid


class _FileOutputs:
    """Per-file accumulation of step embeddings (or their running sum) and CLS tokens."""

    def __init__(self, keep_steps: bool) -> None:
        self.keep_steps = keep_steps
        self.steps: list[Tensor] = []
        self.step_sum: Tensor | None = None
        self.step_count = 0
        self.cls_sum: Tensor | None = None
        self.frame_count = 0

    def add(self, cls: Tensor, steps: Tensor, frames: int) -> None:
        if self.keep_steps:
            self.steps.append(steps)
        step_sum = steps.sum(dim=0)
        self.step_sum = step_sum if self.step_sum is None else self.step_sum + step_sum
        self.step_count += steps.shape[0]
        weighted = cls * frames
        self.cls_sum = weighted if self.cls_sum is None else self.cls_sum + weighted
        self.frame_count += frames


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
    waves: Iterator[Tensor],
    kind: str,
    window: Tensor,
    fb: Tensor,
    batch_chunks: int,
    keep_steps: bool,
) -> list[_FileOutputs]:
    """Run every 2-s chunk of every file through ``encoder`` in batches of ``batch_chunks``.

    Args:
        encoder: maps ``(B, C', 128, chunk_frames)`` and ``valid_steps (B,)`` to
            ``(cls (B, D), steps (B, S, E))``; has ``chunk_frames`` and ``frames_per_step``.
        waves: ``(C, T)`` waveforms at 32 kHz, one per file.
        keep_steps: keep every step embedding (timestamp embeddings) or only their sum.

    Chunks enter the encoder in the dtype of its parameters (bf16 for a bf16 encoder);
    outputs are float32.
    """
    outputs: list[_FileOutputs] = []

    def chunks() -> Iterator[tuple[int, Tensor, int]]:
        for index, wave in enumerate(waves):
            outputs.append(_FileOutputs(keep_steps))
            for block, valid in iter_chunks(wave, kind, window, fb, encoder.chunk_frames):
                yield from ((index, c, int(v)) for c, v in zip(block, valid, strict=True))

    fps = encoder.frames_per_step
    dtype = next(encoder.parameters()).dtype
    for batch in _batched(chunks(), batch_chunks):
        x = torch.stack([c for _, c, _ in batch]).to(dtype)
        valid = [v for _, _, v in batch]
        steps_kept = [math.ceil(v / fps) for v in valid]
        partial = any(v < encoder.chunk_frames for v in valid)
        valid_steps = torch.tensor(steps_kept, device=x.device) if partial else None
        cls, steps = encoder(x, valid_steps)
        cls, steps = cls.float(), steps.float()
        for i, (owner, _, v) in enumerate(batch):
            outputs[owner].add(cls[i], steps[i, : steps_kept[i]], v)
    return outputs
