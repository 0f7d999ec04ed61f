"""natheear_tasks.simulation.recordings (seld-synth): simulated SELD recordings and their
true labels, in both DCASE layouts."""

import json
import math

import numpy as np
import pytest
import soundfile as sf
import torch

from natheear_tasks.ambisonics import active_intensity, ambix_to_fuma, stft_size
from natheear_tasks.cli import main
from natheear_tasks.formats.dcase_events import read_event_csv
from natheear_tasks.formats.dcase_frames import read_frame_csv
from natheear_tasks.simulation.recordings import (
    Event,
    Settings,
    SynthError,
    plan_times,
    render_events,
    simulate_recording,
    write_dataset,
)
from natheear_tasks.simulation.rirs import AmbisonicsReceiver
from natheear_tasks.simulation.rooms import Placement
from natheear_tasks.simulation.sounds import CLASSES, dry_sound

RATE = 16000


def _angle(a, b) -> float:
    a, b = np.asarray(a, float), np.asarray(b, float)
    return math.degrees(math.acos(np.clip(a @ b / np.linalg.norm(a) / np.linalg.norm(b), -1, 1)))


@pytest.mark.parametrize("name", CLASSES)
def test_dry_sounds_have_unit_rms_and_stay_below_nyquist(name):
    rng = np.random.default_rng(1)
    sound = dry_sound(name, RATE, RATE, rng)
    assert sound.shape == (RATE,) and sound.dtype == np.float32
    assert np.sqrt(np.mean(sound.astype(np.float64) ** 2)) == pytest.approx(1.0, rel=0.02)
    spectrum = np.abs(np.fft.rfft(sound)) ** 2
    freqs = np.fft.rfftfreq(RATE, 1 / RATE)
    assert spectrum[freqs > 0.46 * RATE].sum() < 1e-3 * spectrum.sum()


def _features(sound: np.ndarray) -> np.ndarray:
    """Mean and spread over 50-ms frames of the log octave-band energies (31 Hz-8 kHz)."""
    frames = sound[: len(sound) // 800 * 800].reshape(-1, 800) * np.hanning(800)
    power = np.abs(np.fft.rfft(frames, axis=1)) ** 2
    freqs = np.fft.rfftfreq(800, 1 / RATE)
    edges = np.geomspace(31.25, 8000, 9)
    bands = np.stack(
        [
            power[:, (freqs >= a) & (freqs < b)].sum(1)
            for a, b in zip(edges[:-1], edges[1:], strict=True)
        ],
        axis=1,
    )
    level = np.log10(bands / bands.sum() * len(frames) + 1e-3)
    return np.concatenate([level.mean(0), level.std(0)])


def test_each_class_is_recognised_by_its_sound():
    """Nearest class centroid (spectral and temporal band statistics) of five draws of
    every class, from five other draws each: the classes are told apart."""
    centroids = {
        name: np.mean(
            [_features(dry_sound(name, RATE, RATE, np.random.default_rng(s))) for s in range(5)],
            axis=0,
        )
        for name in CLASSES
    }
    for name in CLASSES:
        for seed in range(5, 10):
            features = _features(dry_sound(name, RATE, RATE, np.random.default_rng(seed)))
            nearest = min(CLASSES, key=lambda other: np.linalg.norm(features - centroids[other]))
            assert nearest == name, (name, seed)


def test_every_recording_has_every_block_kind():
    """Lone events, overlaps of two classes and of one class, and silence, whatever the
    seed, once recordings are 8.5 s long."""
    for seed in range(30):
        settings = Settings("events", seconds=8.5, seed=seed)
        times = plan_times(np.random.default_rng(seed), settings)
        roles = {role for _, _, role in times}
        assert {"lone", "first", "second-different", "second-same"} <= roles
        assert times[0][0] >= 0.2 and times[-1][1] <= 8.4
        covered = sorted((s, e) for s, e, _ in times)
        ends = np.maximum.accumulate([e for _, e in covered])
        gaps = [b[0] - end for end, b in zip(ends[:-1], covered[1:], strict=True)]
        assert max([covered[0][0], *gaps, 8.5 - ends[-1]]) >= 0.4  # the silence block


@pytest.fixture(scope="module")
def frames_recording():
    return simulate_recording(1, Settings("frames", seconds=8.5, sample_rate=RATE, seed=3))


def test_frame_labels_are_the_simulated_truth(frames_recording):
    recording = frames_recording
    rows = recording.frame_rows(distance=True)
    events = recording.events
    assert any(e.moving for e in events) and any(not e.moving for e in events)
    same = [
        (a, b)
        for i, a in enumerate(events)
        for b in events[i + 1 :]
        if a.cls == b.cls and a.start < b.end and b.start < a.end
    ]
    assert same and all(a.source != b.source for a, b in same)
    for event in events:
        frames = [r for r in rows if (r.cls, r.source) == (event.cls, event.source)]
        mine = [r for r in frames if event.start <= r.frame / 10 < event.end]
        assert len(mine) == round((event.end - event.start) * 10)  # every covered frame
        if event.moving:
            steps = [
                _angle(a.direction, b.direction) for a, b in zip(mine[:-1], mine[1:], strict=True)
            ]
            assert 0 < max(steps) <= 6.0 + 1e-6  # at most 60 degrees a second
        else:
            assert len({(r.azimuth, r.elevation) for r in mine}) == 1
    for event in (e for e in events if not e.moving):
        distances = {r.distance for r in rows if (r.cls, r.source) == (event.cls, event.source)}
        assert round(100 * event.placements[0].distance) in distances


def test_moving_source_is_rendered_piecewise_static_per_frame():
    """Anechoic plane waves: in every frame of a moving source the active intensity points
    at that frame's label (the crossfades between frame centres only blend neighbours)."""
    azimuths = [10.0 + 5.0 * k for k in range(20)]  # 50 degrees a second
    placements = [Placement((0.0, 0.0, 0.0), az, 20.0, 1.0) for az in azimuths]
    event = Event(cls=2, start=0.5, end=2.5, placements=placements, level_db=-20.0)
    rirs = np.stack([AmbisonicsReceiver().responses(p.direction[None])[0] for p in placements])
    audio = render_events([event], rirs, RATE, 3 * RATE, CLASSES, np.random.default_rng(0))
    assert (
        np.abs(audio[:, : RATE // 2]).max() == 0 and np.abs(audio[:, int(2.5 * RATE) :]).max() == 0
    )
    hop = RATE // 100
    intensity, _ = active_intensity(torch.from_numpy(audio), RATE, stft_size(RATE), hop)
    for k, placement in enumerate(placements):
        frame = 5 + k  # frames of 100 ms from the recording's start
        vector = intensity[:, 10 * frame + 3 : 10 * frame + 8].sum(-1).numpy()
        assert _angle(vector, placement.direction) < 3.5
    assert _angle(placements[-1].direction, placements[0].direction) > 80


def test_recordings_are_deterministic_and_fuma_is_ambix_reordered(tmp_path):
    settings = Settings("events", files=1, seconds=4.0, sample_rate=RATE, seed=5)
    acn = write_dataset(tmp_path / "acn", settings)
    again = write_dataset(tmp_path / "again", settings)
    fuma = write_dataset(
        tmp_path / "fuma", Settings(**{**settings.__dict__, "channel_order": "fuma"})
    )
    wavs = sorted((acn / "foa_dev").glob("*.wav"))
    assert len(wavs) == 1 and wavs[0].name.startswith("split1_ir0_ov")
    for folder in (again, fuma):
        for sub in ("foa_dev", "metadata_dev"):
            assert sorted(p.name for p in (folder / sub).iterdir()) == sorted(
                p.name for p in (acn / sub).iterdir()
            )
    assert (again / "foa_dev" / wavs[0].name).read_bytes() == wavs[0].read_bytes()
    ambix, rate = sf.read(wavs[0], dtype="float64")
    assert rate == RATE and ambix.shape[1] == 4
    expected = ambix_to_fuma(torch.from_numpy(ambix.T.copy())).numpy().T
    written, _ = sf.read(fuma / "foa_dev" / wavs[0].name, dtype="float64")
    assert np.abs(written - expected).max() <= 1 / 32768
    csv = (acn / "metadata_dev" / wavs[0].name).with_suffix(".csv")
    events = read_event_csv(csv)
    assert events and all(e.distance is not None for e in events)
    about = json.loads((acn / "synth.json").read_text())
    truth = about["files"][0]["events"]
    assert [(e.label, e.start, e.end) for e in events] == [
        (t["class"], t["start"], t["end"])
        for t in sorted(truth, key=lambda t: (t["start"], t["end"], t["class"]))
    ]
    assert (acn / "classes.txt").read_text().split() == list(CLASSES)


def test_frame_dataset_layout_and_cli(tmp_path, capsys):
    out = tmp_path / "toy"
    args = ["seld-synth", str(out), "--layout", "frames", "--files", "3", "--seconds", "4"]
    args += ["--sample-rate", str(RATE), "--distance", "--classes", "alarm", "knock"]
    assert main(args) == 0
    wavs = sorted(p.relative_to(out / "foa_dev").as_posix() for p in out.rglob("*.wav"))
    assert wavs == [
        "dev-test/fold3_room2_mix001.wav",
        "dev-train/fold1_room0_mix001.wav",
        "dev-val/fold2_room1_mix001.wav",
    ]
    for wav in wavs:
        rows = read_frame_csv((out / "metadata_dev" / wav).with_suffix(".csv"), num_classes=2)
        assert rows and all(r.distance is not None for r in rows)
        assert sf.info(out / "foa_dev" / wav).channels == 4
    assert main(args) == 2
    assert "exists" in capsys.readouterr().err
    with pytest.raises(SynthError, match="distance"):
        Settings("events", distance=True).check()
