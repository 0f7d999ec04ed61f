"""Training clips: sources, decoding, loudness, the split over ranks and workers, resuming
the stream, and corrupt clips."""

import io
import logging

import numpy as np
import pytest
import soundfile as sf
import torch
from webdataset import TarWriter

from training.data import (
    BadClipError,
    ClipStream,
    ReaderState,
    TooManyBadClipsError,
    decode_audio,
    make_loader,
    open_source,
    prepare_clip,
)

SECONDS = 2.5
SAMPLES = 80000  # 2.5 s at 32 kHz


def encode(wave: np.ndarray, rate: int, fmt: str) -> bytes:
    buffer = io.BytesIO()
    sf.write(buffer, wave, rate, format=fmt.upper())
    return buffer.getvalue()


def tone(freq: float, seconds: float, rate: int, channels: int = 1) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    wave = 0.1 * np.sin(2 * np.pi * freq * t).astype(np.float32)
    return wave if channels == 1 else np.stack([wave] + [0.5 * wave] * (channels - 1), axis=1)


def write_shards(folder, shards: int, per_shard: int, corrupt: set[str] = frozenset()) -> set[str]:
    """Shards of short tones; keys in ``corrupt`` get bytes that are not audio. Returns
    every key as ``path:key``."""
    folder.mkdir(parents=True, exist_ok=True)
    keys = set()
    for s in range(shards):
        path = folder / f"shard-{s:04d}.tar"
        with TarWriter(str(path)) as writer:
            for c in range(per_shard):
                key = f"s{s}c{c}"
                data = (
                    b"not audio at all"
                    if key in corrupt
                    else encode(tone(200 + c, 1.0, 16000), 16000, "flac")
                )
                writer.write({"__key__": key, "flac": data, "json": b"{}"})
                keys.add(f"{path}:{key}")
    return keys


def test_prepare_clip_resamples_takes_channel_0_sets_loudness_and_pads():
    rng = np.random.default_rng(0)
    stereo = tone(440, 1.0, 48000, channels=2).T  # (C, T)
    wave, length = prepare_clip(stereo, 48000, SAMPLES, -14.0, rng)
    assert wave.shape == (SAMPLES,) and length == 32000
    rms_db = 20 * np.log10(wave[:length].square().mean().sqrt().item())
    assert rms_db == pytest.approx(-14.0, abs=0.01)
    assert torch.all(wave[length:] == 0)
    spectrum = np.abs(np.fft.rfft(wave[:length].numpy()))
    assert np.argmax(spectrum) * 32000 / length == pytest.approx(440, abs=2)  # still 440 Hz
    # The second channel is ignored: scaling it changes nothing.
    other = stereo.copy()
    other[1] *= 7
    torch.testing.assert_close(prepare_clip(other, 48000, SAMPLES, -14.0, rng)[0], wave)


def test_prepare_clip_cuts_long_clips_to_a_window():
    long = np.arange(5 * 32000, dtype=np.float32)[None] / 1e6  # a ramp: windows differ
    a, la = prepare_clip(long, 32000, SAMPLES, -14.0, np.random.default_rng(1))
    b, _ = prepare_clip(long, 32000, SAMPLES, -14.0, np.random.default_rng(2))
    assert la == SAMPLES and not torch.allclose(a, b)


def test_decode_audio_rejects_garbage_and_silence_is_kept():
    with pytest.raises(BadClipError, match="clip7: cannot decode"):
        decode_audio(b"garbage", "clip7")
    silent, rate = decode_audio(encode(np.zeros(16000, np.float32), 16000, "wav"), "quiet")
    wave, _ = prepare_clip(silent, rate, SAMPLES, -14.0, np.random.default_rng(0))
    assert torch.all(wave == 0)


def test_sources_shards_folder_and_manifest(tmp_path):
    keys = write_shards(tmp_path / "shards", 3, 2)
    assert len(keys) == 6
    pattern = str(tmp_path / "shards" / "shard-{0000..0002}.tar")
    assert [u.path for u in open_source(pattern)] == [
        u.path for u in open_source(str(tmp_path / "shards"))
    ]
    assert all(u.is_shard for u in open_source(pattern))
    audio = tmp_path / "audio" / "sub"
    audio.mkdir(parents=True)
    for i in range(3):
        sf.write(audio / f"{i}.wav", tone(300, 0.5, 16000), 16000)
    assert len(open_source(str(tmp_path / "audio"))) == 3
    manifest = tmp_path / "list.txt"
    manifest.write_text("# clips\naudio/sub/0.wav\naudio/sub/2.wav  # second\n\n")
    assert [u.path for u in open_source(str(manifest))] == [
        str(tmp_path / "audio/sub/0.wav"),
        str(tmp_path / "audio/sub/2.wav"),
    ]
    manifest.write_text("audio/sub/9.wav\n")
    with pytest.raises(ValueError, match="1 files do not exist"):
        open_source(str(manifest))
    with pytest.raises(ValueError, match="4 files do not exist"):
        open_source(str(tmp_path / "none-{0..3}.tar"))


def stream(units, rank=0, world=1, readers=1, batch=1, **kw) -> ClipStream:
    return ClipStream(
        units, batch, SAMPLES, seed=3, rank=rank, world_size=world, num_readers=readers, **kw
    )


def first_epoch_keys(s: ClipStream, reader: int) -> list[str]:
    keys = []
    for b in s.batches(reader):
        if b["state"]["epoch"] > 0:
            break
        keys += b["keys"]
    return keys


@pytest.mark.parametrize("kind", ["shards", "files"])
def test_ranks_and_workers_read_every_clip_once_per_epoch(tmp_path, kind):
    if kind == "files":  # each file is a unit of one clip
        for i in range(9):
            sf.write(tmp_path / f"{i}.flac", tone(200 + i, 0.5, 16000), 16000)
        expected = {str(tmp_path / f"{i}.flac") for i in range(9)}
    else:
        expected = write_shards(tmp_path, 8, 3)
    source = str(tmp_path)
    units = open_source(source)
    seen = []
    for rank in range(2):
        for reader in range(2):
            seen += first_epoch_keys(stream(units, rank, 2, 2), reader)
    assert len(seen) == len(set(seen)) == len(expected)
    assert set(seen) == expected
    # Another epoch reads them in another order.
    s = stream(units, 0, 2, 2)
    assert s.epoch_clips(0, 0) != s.epoch_clips(0, 1) or len(s.epoch_clips(0, 0)) < 2


def test_too_few_shards_for_the_readers_is_an_error(tmp_path):
    write_shards(tmp_path, 3, 2)
    with pytest.raises(ValueError, match="3 shards cannot feed 4 readers"):
        stream(open_source(str(tmp_path)), world=2, readers=2)


def test_a_resumed_loader_continues_exactly(tmp_path):
    """Batches after a restart from saved reader states equal an uninterrupted loader's."""
    write_shards(tmp_path, 4, 3)
    units = open_source(str(tmp_path))
    full = iter(make_loader(stream(units, readers=2, batch=2), num_workers=2))
    expected = [next(full)["keys"] for _ in range(9)]
    del full
    loader = iter(make_loader(stream(units, readers=2, batch=2), num_workers=2))
    states, got = {}, []
    for _ in range(5):
        batch = next(loader)
        states[batch["reader"]] = ReaderState(**batch["state"])
        got.append(batch["keys"])
    next_reader = (batch["reader"] + 1) % 2
    del loader
    resumed = stream(units, readers=2, batch=2, states=states, first_reader=next_reader)
    loader = iter(make_loader(resumed, num_workers=2))
    got += [next(loader)["keys"] for _ in range(4)]
    assert got == expected
    assert len({k for keys in expected for k in keys}) == 12  # crossed into epoch 2


def test_corrupt_clips_are_counted_and_skipped(tmp_path, caplog):
    keys = write_shards(tmp_path, 2, 4, corrupt={"s1c2"})
    s = stream(open_source(str(tmp_path)), batch=7, max_bad_fraction=0.05)
    with caplog.at_level(logging.WARNING, logger="training.data"):
        batch = next(s.batches(0))
    assert len(batch["keys"]) == 7 and batch["audio"].shape == (7, SAMPLES)
    assert set(batch["keys"]) == {k for k in keys if not k.endswith("s1c2")}
    assert batch["state"] == {"epoch": 0, "position": 8, "read": 8, "bad": 1}
    assert "s1c2: cannot decode" in caplog.text


def test_too_many_corrupt_clips_stop_the_run(tmp_path):
    write_shards(tmp_path, 2, 4, corrupt={"s0c1", "s1c3"})
    s = stream(open_source(str(tmp_path)), batch=6, max_bad_fraction=0.01)  # 1 in 100 allowed
    with pytest.raises(TooManyBadClipsError, match="could not use 2 of the"):
        next(s.batches(0))


def test_too_many_corrupt_clips_fail_through_dataloader_workers(tmp_path):
    write_shards(tmp_path, 2, 2, corrupt={"s0c0", "s0c1", "s1c0"})
    s = stream(open_source(str(tmp_path)), batch=2, max_bad_fraction=0.0)
    with pytest.raises(TooManyBadClipsError, match="data.max_bad_fraction"):
        next(iter(make_loader(s, num_workers=1)))
