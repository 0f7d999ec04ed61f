"""Wav files encoded in memory, byte-identical for the same audio whatever the subtype."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import soundfile as sf

FLOAT_SUBTYPES = ("FLOAT", "DOUBLE")  # wav subtypes that can hold NaN or infinity


def wav_bytes(audio: np.ndarray, sample_rate: int, subtype: str) -> bytes:
    """A wav file holding ``audio (T, C)`` (float, full scale 1), encoded in memory; the
    same audio gives the same bytes, whatever the subtype.

    PCM_16 samples are quantized here, ``round(x * 32768)`` clipped to the 16-bit range
    (libsndfile's scale), so that the bytes do not depend on the libsndfile version and
    because it is many times faster than libsndfile's conversion; libsndfile converts every
    other subtype. For FLOAT and DOUBLE, libsndfile adds a PEAK chunk holding the time of
    writing; it is left out (readers do not need it).
    """
    if subtype == "PCM_16":
        scaled = np.rint(np.asarray(audio, dtype=np.float32) * np.float32(32768))
        audio = np.clip(scaled, -32768, 32767).astype(np.int16)
    buffer = io.BytesIO()
    sf.write(buffer, np.ascontiguousarray(audio), sample_rate, subtype=subtype, format="WAV")
    data = buffer.getvalue()
    return _without_chunk(data, b"PEAK") if subtype in FLOAT_SUBTYPES else data


def _without_chunk(wav: bytes, chunk_id: bytes) -> bytes:
    """The RIFF/WAVE file ``wav`` without its first ``chunk_id`` chunk (the RIFF size updated)."""
    kept = [wav[12:]]
    position = 12
    while position + 8 <= len(wav) and wav[position : position + 4] != b"data":
        size = int.from_bytes(wav[position + 4 : position + 8], "little")
        end = position + 8 + size + (size & 1)  # chunks are padded to an even size
        if wav[position : position + 4] == chunk_id:
            kept = [wav[12:position], wav[end:]]
            break
        position = end
    body = b"".join(kept)
    return b"RIFF" + (len(body) + 4).to_bytes(4, "little") + wav[8:12] + body


def wav_frames(path: Path) -> tuple[int, int] | None:
    """``(declared, present)`` sample frames of a RIFF/WAVE file: what its ``data`` chunk's
    header promises and what the file holds (less when it was cut short: a copy or a
    download stopped). Reads the chunk headers only; None for another container (RF64, W64,
    not a wav), whose length libsndfile checks itself."""
    size = path.stat().st_size
    with path.open("rb") as handle:
        head = handle.read(12)
        if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
            return None
        block_align = 0
        position = 12
        while position + 8 <= size:
            handle.seek(position)
            chunk = handle.read(8)
            name, length = chunk[:4], int.from_bytes(chunk[4:8], "little")
            if name == b"fmt ":
                fmt = handle.read(min(length, 16))
                block_align = int.from_bytes(fmt[12:14], "little") if len(fmt) >= 14 else 0
            elif name == b"data":
                if not block_align:
                    return None
                present = max(0, size - position - 8)
                return length // block_align, min(length, present) // block_align
            position += 8 + length + (length & 1)
    return None


def truncation_problem(path: Path, shown: str) -> str | None:
    """A problem naming a wav cut short (fewer frames than its header declares), or None."""
    frames = wav_frames(path)
    if frames is None or frames[1] >= frames[0]:
        return None
    declared, present = frames
    return (
        f"{shown} is cut short: its header declares {declared} frames but it holds {present} "
        "(an interrupted copy or download?); copy it again"
    )
