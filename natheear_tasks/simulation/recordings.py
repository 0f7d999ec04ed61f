"""Simulated SELD recordings: small first-order Ambisonics scenes with their true labels,
written as a DCASE dataset (frame-list or event-list layout), for tests and toy datasets.

One recording is one room (:func:`natheear_tasks.simulation.rooms.sample_scene`: size, RT60,
listener position and yaw) and a timeline of blocks after 0.2-0.6 s of silence: a **lone**
event, two overlapping events of **different** classes, two overlapping events of the
**same** class (two sources), and **silence**; the first four blocks are these four kinds in
random order (all fit when ``seconds >= 8.5``), later ones are drawn at random until the
recording is full. A lone event lasts 1-2 s, the events of a pair 1-1.6 s and 0.8-1.4 s (the
second starts 0.3-0.5 s after the first and overlaps it by at least 0.5 s), silence
0.4-0.8 s; blocks are 0.1-0.3 s apart. Each event is a dry
sound of its class (:mod:`natheear_tasks.simulation.sounds`, RMS -36 to -26 dBFS) at
0.7-2.5 m from the microphone, elevation within +-58 degrees, at least 40 degrees from the
events it overlaps.

**Moving sources** (frame-list layout only; the event-list datasets have static sources):
the second event of a different-class pair always moves, other events with probability
0.3; a moving source turns around the microphone at 20-60 degrees a second (azimuth only).
Approximation: it is rendered piecewise static, one position per 100-ms label frame (at the
frame's centre, with its own room impulse response), crossfaded linearly between
neighbouring frame centres; each frame's label is that frame's position.

Sound: AmbiX RIRs from :func:`natheear_tasks.simulation.rirs.simulate` (image sources up to
order 2, ray-traced tail, cut at 1 s; one simulation per recording with every position in
it), plus diffuse background noise (synthesized, through three noise positions) 25 dB below
the events. The mixture is scaled down when its peak would pass 0.5 (headroom for
resampling). Labels are the simulated truth: frame ``k`` of an event is labelled when the
event covers all of it (frame-list events start and end on frame boundaries; event-list
times are in ms).

Layouts (as :mod:`natheear_tasks.tasks.seld_dataset` reads them):

* frames: ``foa_dev/<subset>/fold<f>_room<i>_mix<m>.wav`` and
  ``metadata_dev/<subset>/<same>.csv`` (``frame,class,source,azimuth,elevation[,distance
  cm]``); recording ``i`` is in fold ``i % folds + 1``; the last fold is ``dev-test``, the
  one before it ``dev-val`` (with 3 folds or more), the others ``dev-train``;
* events: ``foa_dev/split<f>_ir<i>_ov<o>_<m>.wav`` and ``metadata_dev/<same>.csv`` (header
  ``sound_event_recording,start_time,end_time,ele,azi,dist``; distance in m), ``o`` the
  most events active at once.

``classes.txt`` lists the class names in index order; ``synth.json`` records the settings
and every recording's room and events. Audio is PCM_16 AmbiX, or FuMa
(W / sqrt(2), X, Y, Z) with ``channel_order="fuma"``.
"""

from __future__ import annotations

import argparse
import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from natheear_tasks.ambisonics import CHANNEL_ORDERS, ambix_to_fuma
from natheear_tasks.atomic import atomic_folder, atomic_write_bytes
from natheear_tasks.exits import ALL_OR_NOTHING, run_command
from natheear_tasks.formats.dcase_events import EventRow, format_event_csv
from natheear_tasks.formats.dcase_frames import FRAME_SECONDS, FrameRow, format_frame_csv
from natheear_tasks.formats.wav import wav_bytes
from natheear_tasks.pool import run_jobs
from natheear_tasks.seeding import derive_seed, generator
from natheear_tasks.simulation import rooms
from natheear_tasks.simulation.mix import fft_convolve
from natheear_tasks.simulation.noise import SynthesizedNoise
from natheear_tasks.simulation.rirs import AmbisonicsReceiver, SimulationSettings, simulate
from natheear_tasks.simulation.rooms import Placement, Scene
from natheear_tasks.simulation.sounds import CLASSES, dry_sound

LAYOUTS = ("frames", "events")
KINDS = ("lone", "different", "same", "silence")
LEAD_SECONDS = (0.2, 0.6)
LONE_SECONDS = (1.0, 2.0)
FIRST_SECONDS = (1.0, 1.6)  # first event of a pair
OFFSET_SECONDS = (0.3, 0.5)  # second event's start after the first's
SECOND_SECONDS = (0.8, 1.4)
SILENCE_SECONDS = (0.4, 0.8)
GAP_SECONDS = (0.1, 0.3)
LEVEL_DBFS = (-36.0, -26.0)
DISTANCE_M = (0.7, 2.5)
MAX_SIN_ELEVATION = 0.85  # |elevation| <= 58 degrees
MIN_SEPARATION_DEG = 40.0
MOVING_PROBABILITY = 0.3
TURN_DEG_PER_S = (20.0, 60.0)
NOISE_BELOW_DB = 25.0
NOISE_SOURCES = 3
PEAK = 0.5  # limit on the mixture peak (headroom for resampling)
SIMULATION = SimulationSettings(max_order=2, n_rays=2000, max_seconds=1.0)
AUDIO_DIR, METADATA_DIR = "foa_dev", "metadata_dev"


class SynthError(ValueError):
    """Settings that cannot make a dataset (or an output folder already there)."""


@dataclass(frozen=True)
class Settings:
    """What :func:`write_dataset` makes (see the module docstring)."""

    layout: str
    files: int = 6
    seconds: float = 10.0
    sample_rate: int = 24000
    folds: int = 3
    classes: tuple[str, ...] = CLASSES
    distance: bool = False  # frame lists: the STARSS23 distance column (cm)
    channel_order: str = "acn"
    seed: int = 0
    simulation: SimulationSettings = field(default=SIMULATION)

    def check(self) -> None:
        problems = []
        if self.layout not in LAYOUTS:
            problems.append(f"layout must be one of {LAYOUTS}, got {self.layout!r}")
        if self.files < 1 or self.folds < 1:
            problems.append("files and folds must be at least 1")
        if not 4.0 <= self.seconds <= 600.0:
            problems.append(f"seconds must be in [4, 600], got {self.seconds}")
        if self.sample_rate < 8000:
            problems.append(f"sample rate must be at least 8000 Hz, got {self.sample_rate}")
        unknown = [c for c in self.classes if c not in CLASSES]
        if len(self.classes) < 2 or unknown or len(set(self.classes)) != len(self.classes):
            problems.append(f"classes must be two or more distinct names of {list(CLASSES)}")
        if self.distance and self.layout != "frames":
            problems.append("the distance column is a frame-list option (event lists have one)")
        if self.channel_order not in CHANNEL_ORDERS:
            problems.append(f"channel order must be one of {CHANNEL_ORDERS}")
        if problems:
            raise SynthError("; ".join(problems))

    def record(self) -> dict:
        return {**asdict(self), "classes": list(self.classes)}


@dataclass
class Event:
    """One simulated event: class index, source index, times and its position(s)."""

    cls: int
    start: float  # seconds
    end: float
    placements: list[Placement]  # one (static) or one per 100-ms frame (moving)
    level_db: float
    source: int = 0

    @property
    def moving(self) -> bool:
        return len(self.placements) > 1

    @property
    def first_frame(self) -> int:
        return round(self.start / FRAME_SECONDS)

    def record(self, classes: tuple[str, ...]) -> dict:
        first, last = self.placements[0], self.placements[-1]
        return {
            "class": classes[self.cls],
            "source": self.source,
            "start": self.start,
            "end": self.end,
            "moving": self.moving,
            "azimuth": [first.azimuth, last.azimuth],
            "elevation": first.elevation,
            "distance": first.distance,
        }


@dataclass
class Recording:
    """A simulated recording: AmbiX audio, its events and where it goes in the dataset."""

    index: int
    name: str  # file stem
    fold: int
    subset: str  # "" when files sit directly in foa_dev/
    audio: np.ndarray  # (4, T) float32 AmbiX
    events: list[Event]
    room: dict

    def frame_rows(self, distance: bool) -> list[FrameRow]:
        """The frame-list labels: one row per event per 100-ms frame it covers."""
        rows = []
        for event in self.events:
            for k in range(event.first_frame, round(event.end / FRAME_SECONDS)):
                p = event.placements[min(k - event.first_frame, len(event.placements) - 1)]
                cm = round(100 * p.distance) if distance else None
                rows.append(FrameRow(k, event.cls, event.source, p.azimuth, p.elevation, cm))
        return rows

    def event_rows(self, classes: tuple[str, ...]) -> list[EventRow]:
        """The event-list labels (static sources; distance in m)."""
        return [
            EventRow(
                classes[e.cls],
                e.start,
                e.end,
                e.placements[0].elevation,
                e.placements[0].azimuth,
                round(e.placements[0].distance, 2),
            )
            for e in self.events
        ]


def _quantize(seconds: float, layout: str) -> float:
    step = FRAME_SECONDS if layout == "frames" else 0.001
    return round(round(seconds / step) * step, 3)


def plan_times(rng: np.random.Generator, settings: Settings) -> list[tuple[float, float, str]]:
    """Event times ``(start, end, role)`` of one recording, role ``lone``/``first``/
    ``second-different``/``second-same``; quantized to frames (frame lists) or ms."""
    q = settings.layout
    t = _quantize(rng.uniform(*LEAD_SECONDS), q)
    kinds = [str(k) for k in rng.permutation(KINDS)]
    times: list[tuple[float, float, str]] = []
    while True:
        kind = kinds.pop(0) if kinds else str(rng.choice(KINDS))
        if kind == "silence":
            block, end = [], t + _quantize(rng.uniform(*SILENCE_SECONDS), q)
        elif kind == "lone":
            end = t + _quantize(rng.uniform(*LONE_SECONDS), q)
            block = [(t, end, "lone")]
        else:
            first_end = t + _quantize(rng.uniform(*FIRST_SECONDS), q)
            second = t + _quantize(rng.uniform(*OFFSET_SECONDS), q)
            second_end = second + _quantize(rng.uniform(*SECOND_SECONDS), q)
            block = [(t, first_end, "first"), (second, second_end, f"second-{kind}")]
            end = max(first_end, second_end)
        if end > settings.seconds - 0.1:
            return times
        times += [(round(s, 3), round(e, 3), role) for s, e, role in block]
        t = _quantize(end + rng.uniform(*GAP_SECONDS), q)


def _room_point(scene: Scene, azimuth: float, elevation: float, distance: float) -> np.ndarray:
    """Room-frame position of a listener-frame direction and distance."""
    az, el = math.radians(azimuth), math.radians(elevation)
    local = distance * np.array(
        [math.cos(el) * math.cos(az), math.cos(el) * math.sin(az), math.sin(el)]
    )
    c, s = math.cos(math.radians(scene.listener_yaw)), math.sin(math.radians(scene.listener_yaw))
    world = np.array([c * local[0] - s * local[1], s * local[0] + c * local[1], local[2]])
    return np.array(scene.listener_position) + world


def _inside(scene: Scene, point: np.ndarray) -> bool:
    size = np.array(scene.room_size)
    return bool(np.all(point >= rooms.WALL_MARGIN) and np.all(point <= size - rooms.WALL_MARGIN))


def _angle(a: np.ndarray, b: np.ndarray) -> float:
    return math.degrees(math.acos(max(-1.0, min(1.0, float(a @ b)))))


def _place(
    rng: np.random.Generator,
    scene: Scene,
    frames: int,
    moving: bool,
    avoid: list[np.ndarray],
) -> list[Placement]:
    """Positions of one event: one, or one per frame for a moving source (falls back to a
    static source when no turn fits in the room)."""
    listener = np.array(scene.listener_position)
    for attempt in range(400):
        azimuth = rng.uniform(-180, 180)
        elevation = math.degrees(math.asin(rng.uniform(-MAX_SIN_ELEVATION, MAX_SIN_ELEVATION)))
        distance = rng.uniform(*DISTANCE_M)
        if moving and attempt < 200:
            speed = rng.uniform(*TURN_DEG_PER_S) * rng.choice([-1.0, 1.0])
            azimuths = [azimuth + speed * FRAME_SECONDS * (k + 0.5) for k in range(frames)]
        else:
            azimuths = [azimuth]
        points = [_room_point(scene, a, elevation, distance) for a in azimuths]
        if not all(_inside(scene, p) for p in points):
            continue
        placements = [rooms.place(listener, scene.listener_yaw, p) for p in points]
        if all(_angle(placements[0].direction, d) >= MIN_SEPARATION_DEG for d in avoid):
            return placements
    raise RuntimeError("no source position fits this room")  # rooms are >= 3 m: unreachable


def plan_events(rng: np.random.Generator, settings: Settings, scene: Scene) -> list[Event]:
    """The events of one recording: times, classes, positions and source indices."""
    events: list[Event] = []
    count = len(settings.classes)
    for start, end, role in plan_times(rng, settings):
        if role == "second-same":
            cls = events[-1].cls
        elif role == "second-different":
            cls = int((events[-1].cls + rng.integers(1, count)) % count)
        else:
            cls = int(rng.integers(count))
        frames = round((end - start) / FRAME_SECONDS)
        moving = settings.layout == "frames" and (
            role == "second-different" or rng.uniform() < MOVING_PROBABILITY
        )
        overlapping = [e for e in events if e.start < end and start < e.end]
        avoid = [e.placements[0].direction for e in overlapping]
        placements = _place(rng, scene, frames, moving, avoid)
        events.append(Event(cls, start, end, placements, float(rng.uniform(*LEVEL_DBFS))))
    _assign_sources(events)
    return events


def _assign_sources(events: list[Event]) -> None:
    """Overlapping events of one class get different source indices (the lowest free);
    ``events`` are in order of onset."""
    for i, event in enumerate(events):
        busy = {
            e.source
            for e in events[:i]
            if e.cls == event.cls and e.start < event.end and event.start < e.end
        }
        event.source = min(set(range(len(busy) + 1)) - busy)


def _crossfade_weights(event: Event, rate: int, samples: int) -> np.ndarray:
    """``(frames, samples)`` linear crossfades between frame centres, summing to 1."""
    t = np.arange(samples) / rate
    centres = (np.arange(len(event.placements)) + 0.5) * FRAME_SECONDS
    weights = np.empty((len(centres), samples))
    for k in range(len(centres)):
        one = np.zeros(len(centres))
        one[k] = 1.0
        weights[k] = np.interp(t, centres, one)  # flat beyond the first and last centre
    return weights


def _add(out: np.ndarray, signal: np.ndarray, start: int, rir: np.ndarray) -> None:
    """Add ``signal`` through ``rir (4, L)`` at sample ``start``, tail cut at the end."""
    length = out.shape[1] - start
    if length <= 0:
        return
    padded = np.pad(signal, (0, rir.shape[1] - 1))[:length]
    wet = fft_convolve(torch.from_numpy(padded), torch.from_numpy(rir)).numpy()
    out[:, start : start + wet.shape[1]] += wet


def render_events(
    events: list[Event],
    rirs: np.ndarray,
    rate: int,
    samples: int,
    classes: tuple[str, ...],
    rng: np.random.Generator,
) -> np.ndarray:
    """The events' dry sounds through their RIRs, ``(4, samples)`` float64.

    Args:
        events: in order; event ``i`` uses the next ``len(placements)`` rows of ``rirs``.
        rirs: ``(N, 4, L)`` AmbiX RIRs, one per placement (moving sources: per frame, each
            frame's piece crossfaded linearly into the next between frame centres).
        rate: Hz.
        samples: length of the result.
        classes: class names (of ``event.cls``).
        rng: draws the dry sounds.
    """
    audio = np.zeros((4, samples), dtype=np.float64)
    row = 0
    for event in events:
        start = round(event.start * rate)
        length = round(event.end * rate) - start
        gain = 10 ** (event.level_db / 20)
        dry = gain * dry_sound(classes[event.cls], length, rate, rng).astype(np.float64)
        if event.moving:
            weights = _crossfade_weights(event, rate, length)
            for k in range(len(event.placements)):
                span = np.flatnonzero(weights[k])
                first, last = int(span[0]), int(span[-1]) + 1
                piece = dry[first:last] * weights[k, first:last]
                _add(audio, piece, start + first, rirs[row + k].astype(np.float64))
        else:
            _add(audio, dry, start, rirs[row].astype(np.float64))
        row += len(event.placements)
    return audio


def simulate_recording(index: int, settings: Settings) -> Recording:
    """Recording ``index`` of the dataset (it depends on the seed and ``index`` only)."""
    rng = generator(settings.seed, "seld-recording", index)
    rate = settings.sample_rate
    scene = rooms.sample_scene(rng)
    events = plan_events(rng, settings, scene)
    listener = np.array(scene.listener_position)
    noises = []
    while len(noises) < NOISE_SOURCES:
        point = rng.uniform(rooms.WALL_MARGIN, np.array(scene.room_size) - rooms.WALL_MARGIN)
        if np.linalg.norm(point - listener) >= rooms.NOISE_MIN_DISTANCE:
            noises.append(rooms.place(listener, scene.listener_yaw, point))
    placements = [p for e in events for p in e.placements] + noises
    room = Scene(
        scene.room_size,
        scene.rt60,
        scene.listener_position,
        scene.listener_yaw,
        placements[0],
        "diffuse",
        tuple(placements[1:]),
    )
    seed = derive_seed(settings.seed, "seld-rirs", index)
    rirs, info = simulate(room, AmbisonicsReceiver(), rate, settings.simulation, seed)
    samples = round(settings.seconds * rate)
    audio = render_events(events, rirs, rate, samples, settings.classes, rng)
    row = sum(len(e.placements) for e in events)
    noise, _ = SynthesizedNoise().draw(rng, {rate: samples})
    background = np.zeros_like(audio)
    _add(background, noise[rate].astype(np.float64), 0, rirs[row:].sum(axis=0).astype(np.float64))
    rms = math.sqrt(float(np.mean(audio[0] ** 2)))
    noise_rms = math.sqrt(float(np.mean(background[0] ** 2)))
    if rms > 0 and noise_rms > 0:
        audio += background * (rms / noise_rms * 10 ** (-NOISE_BELOW_DB / 20))
    peak = float(np.abs(audio).max())
    if peak > PEAK:
        audio *= PEAK / peak
    fold = index % settings.folds + 1
    number = index // settings.folds + 1
    if settings.layout == "frames":
        name = f"fold{fold}_room{index}_mix{number:03d}"
        subset = "dev-test" if fold == settings.folds else "dev-train"
        if settings.folds >= 3 and fold == settings.folds - 1:
            subset = "dev-val"
    else:
        name = f"split{fold}_ir{index}_ov{_polyphony(events)}_{number}"
        subset = ""
    record = scene.record()
    record["room"].update(info)
    room_record = {k: record[k] for k in ("room", "listener")}
    return Recording(index, name, fold, subset, audio.astype(np.float32), events, room_record)


def _polyphony(events: list[Event]) -> int:
    """The most events active at once."""
    edges = sorted([(e.start, 1) for e in events] + [(e.end, -1) for e in events])
    active = most = 0
    for _, step in edges:
        active += step
        most = max(most, active)
    return most


_WORKER: dict = {}


def _start_worker(settings: Settings, folder: Path) -> None:
    _WORKER.update(settings=settings, folder=folder)


def _write_recording(index: int) -> dict:
    """Simulate recording ``index`` and write its wav and CSV; returns its record."""
    settings: Settings = _WORKER["settings"]
    folder: Path = _WORKER["folder"]
    recording = simulate_recording(index, settings)
    audio = torch.from_numpy(recording.audio)
    if settings.channel_order == "fuma":
        audio = ambix_to_fuma(audio)
    relative = Path(recording.subset) / recording.name if recording.subset else Path(recording.name)
    wav = folder / AUDIO_DIR / relative.with_suffix(".wav")
    atomic_write_bytes(wav, wav_bytes(audio.numpy().T, settings.sample_rate, "PCM_16"))
    if settings.layout == "frames":
        text = format_frame_csv(recording.frame_rows(settings.distance))
    else:
        text = format_event_csv(recording.event_rows(settings.classes))
    atomic_write_bytes(folder / METADATA_DIR / relative.with_suffix(".csv"), text.encode())
    return {
        "file": relative.with_suffix(".wav").as_posix(),
        "fold": recording.fold,
        **recording.room,
        "events": [e.record(settings.classes) for e in recording.events],
    }


def write_dataset(out: str | Path, settings: Settings, workers: int = 1) -> Path:
    """Simulate ``settings.files`` recordings into the new dataset folder ``out``.

    Built in a hidden temporary folder beside ``out`` and renamed at the end: ``out``
    appears complete or not at all.
    """
    settings.check()
    out = Path(out)
    if out.exists():
        raise SynthError(f"{out} exists; give a new folder for the dataset, or remove it")
    with atomic_folder(out) as staging:
        records = sorted(
            run_jobs(
                _write_recording,
                range(settings.files),
                workers,
                initializer=_start_worker,
                initargs=(settings, staging),
                desc=f"simulating {out.name}",
                unit="recording",
            ),
            key=lambda r: r["file"],
        )
        classes = "".join(f"{name}\n" for name in settings.classes)
        atomic_write_bytes(staging / "classes.txt", classes.encode())
        about = {"kind": "natheear-seld-synth", "settings": settings.record(), "files": records}
        atomic_write_bytes(staging / "synth.json", (json.dumps(about, indent=1) + "\n").encode())
    return out


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``seld-synth`` subcommand."""
    parser = subparsers.add_parser(
        "seld-synth",
        help="simulate a small SELD dataset (frame-list or event-list layout) with true labels",
        description="Simulate first-order Ambisonics recordings in random rooms (static and "
        "moving sources, overlapping events of one class and of different classes, silence) "
        "and write them with their true labels as a DCASE dataset that `natheear-tasks seld` "
        "reads: foa_dev/, metadata_dev/, classes.txt, synth.json.",
    )
    parser.add_argument("out", help="dataset folder to create")
    parser.add_argument("--layout", required=True, choices=LAYOUTS)
    parser.add_argument("--files", type=int, default=6, help="recordings (default 6)")
    parser.add_argument("--seconds", type=float, default=10.0, help="each (default 10)")
    parser.add_argument("--sample-rate", type=int, default=24000, help="Hz (default 24000)")
    parser.add_argument("--folds", type=int, default=3, help="folds (default 3)")
    parser.add_argument(
        "--classes", nargs="+", choices=CLASSES, default=list(CLASSES), help="sound classes"
    )
    parser.add_argument(
        "--distance", action="store_true", help="frame lists: add the distance column (cm)"
    )
    parser.add_argument(
        "--channel-order", choices=CHANNEL_ORDERS, default="acn", help="wav convention (acn)"
    )
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--workers", type=int, default=1, help="processes (default 1)")
    parser.set_defaults(handler=main)
    return parser


def main(args: argparse.Namespace) -> int:
    """Run ``seld-synth``: exit 0 done, 2 bad options or an existing OUT, 1 interrupted."""
    settings = Settings(
        layout=args.layout,
        files=args.files,
        seconds=args.seconds,
        sample_rate=args.sample_rate,
        folds=args.folds,
        classes=tuple(args.classes),
        distance=args.distance,
        channel_order=args.channel_order,
        seed=args.seed,
    )
    return run_command(lambda: _simulate(args, settings), (SynthError,), ALL_OR_NOTHING)


def _simulate(args: argparse.Namespace, settings: Settings) -> int:
    if args.workers < 1:
        raise SynthError(f"--workers must be at least 1, got {args.workers}")
    path = write_dataset(args.out, settings, args.workers)
    print(f"{path}: {settings.files} {settings.layout} recordings of {settings.seconds} s")
    return 0
