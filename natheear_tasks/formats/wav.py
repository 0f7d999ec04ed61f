"""Wav files encoded in memory, byte-identical for the same audio whatever the subtype."""

from __future__ import annotations

import io

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
