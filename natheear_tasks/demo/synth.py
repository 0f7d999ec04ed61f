"""Synthetic HEAR tasks made on the machine, for demos and tests (no downloads).

Three tasks, mono, 16 kHz, train / valid / test splits, in the HEAR task layout:

* ``synth_speech_commands`` (scene, multiclass, top-1 accuracy): ten command words
  ("yes", "no", "up", ...) spoken by espeak-ng voices (several English accents times voice
  variants) and flite voices, each at a random speed and pitch, 1-s clips. The splits hold
  different speakers, as Speech Commands does.
* ``synth_env_scenes`` (scene, multiclass, top-1 accuracy): 1-s environmental scenes of eight
  classes made with sox (siren sweeps, engine hum, rain, wind, alarm beeps, bird chirps,
  knocking) and the ALSA test recordings (a voice announcing speaker positions), each with
  random parameters over a quiet noise floor.
* ``synth_env_events`` (event, multilabel, onset F-measure and segment error rate): 2-s
  clips with one or two sound events of five classes at random times over background
  noise; event times in milliseconds.

Deterministic for a seed (sox runs in repeatable mode; all randomness is drawn from one
numpy generator). Needs the Debian packages ``espeak-ng flite sox alsa-utils``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
from scipy.signal import resample_poly
from tqdm import tqdm

from hear_gram.atomic import temp_dir

SAMPLE_RATE = 16000
SPLITS = ("train", "valid", "test")
WORDS = ("yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go")
ESPEAK_VOICES = (
    "en-us",
    "en-gb",
    "en-gb-scotland",
    "en-029",
    "en-gb-x-rp",
    "en-gb-x-gbclan",
    "en-gb-x-gbcwmd",
    "en-us-nyc",
)
ESPEAK_VARIANTS = ("m1", "m3", "m7", "f1", "f2", "f4", "klatt", "croak")
FLITE_VOICES = ("kal", "awb", "rms", "slt")
ALSA_DIR = Path("/usr/share/sounds/alsa")
ALSA_VOICES = (
    "Front_Center",
    "Front_Left",
    "Front_Right",
    "Rear_Center",
    "Rear_Left",
    "Rear_Right",
    "Side_Left",
    "Side_Right",
)
VARIANTS_PER_ACCENT = 6
# Share of each split: a large test split keeps the scores' intervals narrow (at scale 1
# every test split holds at least 200 clips).
SPLIT_SHARES = {"train": 0.5, "valid": 0.15, "test": 0.35}
TOOLS = {"espeak-ng": "espeak-ng", "flite": "flite", "sox": "sox"}
TASKS = ("speech_commands", "env_scenes", "env_events")
NOISE_FLOOR_DBFS = -45.0


class SynthError(RuntimeError):
    """A sound tool that failed."""


class MissingTools(SynthError):
    """A program or recording that the synthetic tasks need is not installed."""


def check_tools() -> None:
    """Raise :class:`MissingTools` naming every missing program or recording."""
    missing = [tool for tool in TOOLS if shutil.which(tool) is None]
    recordings = [ALSA_DIR / f"{name}.wav" for name in ALSA_VOICES]
    absent = [str(r) for r in recordings if not r.is_file()]
    if missing or absent:
        raise MissingTools(
            f"synthetic tasks need the programs {sorted(TOOLS)} and the ALSA recordings in "
            f"{ALSA_DIR}; missing: {missing + absent}. Install them with "
            "`apt-get install espeak-ng flite sox alsa-utils`"
        )


# --- sound sources --------------------------------------------------------------------------


def _run(command: list[str]) -> bytes:
    result = subprocess.run(command, capture_output=True)
    if result.returncode:
        raise SynthError(f"{' '.join(command)} failed: {result.stderr.decode(errors='replace')}")
    return result.stdout


def _read_wav(path: Path) -> np.ndarray:
    audio, rate = sf.read(str(path), dtype="float32", always_2d=True)
    audio = audio.mean(axis=1)
    if rate != SAMPLE_RATE:
        divisor = np.gcd(rate, SAMPLE_RATE)
        audio = resample_poly(audio, SAMPLE_RATE // divisor, rate // divisor).astype(np.float32)
    return audio


def sox(inputs: list[str], effects: list[str]) -> np.ndarray:
    """Run sox in repeatable mode (``inputs`` may be ``["-n"]``); mono float32 at 16 kHz."""
    command = ["sox", "-R", "-q", *inputs, "-r", str(SAMPLE_RATE), "-c", "1"]
    command += ["-t", "raw", "-e", "floating-point", "-b", "32", "-", *effects]
    return np.frombuffer(_run(command), dtype=np.float32).copy()


@dataclass(frozen=True)
class Speaker:
    """A text-to-speech voice: ``engine`` is ``"espeak-ng"`` or ``"flite"``."""

    engine: str
    voice: str

    @property
    def name(self) -> str:
        return f"{self.engine}-{self.voice}".replace("+", "-")


def speakers() -> list[Speaker]:
    """Every speaker: each espeak-ng accent with six voice variants, and the flite voices."""
    out = [
        Speaker("espeak-ng", f"{voice}+{ESPEAK_VARIANTS[(3 * i + k) % len(ESPEAK_VARIANTS)]}")
        for i, voice in enumerate(ESPEAK_VOICES)
        for k in range(VARIANTS_PER_ACCENT)
    ]
    return out + [Speaker("flite", voice) for voice in FLITE_VOICES]


def speak(speaker: Speaker, word: str, speed: float, pitch: float, tmp: Path) -> np.ndarray:
    """``word`` spoken by ``speaker``; ``speed`` (1 = normal) and ``pitch`` (0-1) vary it."""
    wav = tmp / "speech.wav"
    if speaker.engine == "espeak-ng":
        words_per_minute = str(int(175 * speed))
        _run(["espeak-ng", "-v", speaker.voice, "-s", words_per_minute, "-p",
              str(int(100 * pitch)), "-w", str(wav), word])  # fmt: skip
    else:
        _run(["flite", "-voice", speaker.voice, "--setf", f"duration_stretch={1 / speed:.3f}",
              "--setf", f"int_f0_target_mean={80 + 120 * pitch:.0f}", "-t", word,
              "-o", str(wav)])  # fmt: skip
    return _read_wav(wav)


def _siren(rng: np.random.Generator, seconds: float) -> list[str]:
    low, high = rng.uniform(450, 800), rng.uniform(1100, 1700)
    period = rng.uniform(0.3, 0.9)
    repeats = int(np.ceil(seconds / period))
    return ["synth", f"{period:.3f}", "sine", f"{low:.0f}-{high:.0f}", "repeat", str(repeats)]


def _engine(rng: np.random.Generator, seconds: float) -> list[str]:
    return ["synth", f"{seconds:.3f}", "sawtooth", f"{rng.uniform(30, 70):.1f}", "lowpass",
            f"{rng.uniform(250, 600):.0f}", "tremolo", f"{rng.uniform(5, 14):.1f}",
            f"{rng.uniform(30, 70):.0f}"]  # fmt: skip


def _rain(rng: np.random.Generator, seconds: float) -> list[str]:
    return ["synth", f"{seconds:.3f}", "pinknoise", "highpass", f"{rng.uniform(800, 2000):.0f}",
            "lowpass", f"{rng.uniform(5000, 7500):.0f}", "tremolo",
            f"{rng.uniform(15, 40):.1f}", f"{rng.uniform(20, 50):.0f}"]  # fmt: skip


def _wind(rng: np.random.Generator, seconds: float) -> list[str]:
    return ["synth", f"{seconds:.3f}", "brownnoise", "bandpass", f"{rng.uniform(250, 700):.0f}",
            f"{rng.uniform(200, 500):.0f}h", "tremolo", f"{rng.uniform(0.3, 1.2):.2f}",
            f"{rng.uniform(50, 90):.0f}"]  # fmt: skip


def _alarm(rng: np.random.Generator, seconds: float) -> list[str]:
    beep, gap = rng.uniform(0.08, 0.2), rng.uniform(0.06, 0.15)
    repeats = int(np.ceil(seconds / (beep + gap)))
    return ["synth", f"{beep:.3f}", "square", f"{rng.uniform(1500, 2800):.0f}", "pad", "0",
            f"{gap:.3f}", "repeat", str(repeats)]  # fmt: skip


def _birdsong(rng: np.random.Generator, seconds: float) -> list[str]:
    chirp, gap = rng.uniform(0.04, 0.1), rng.uniform(0.04, 0.2)
    low = rng.uniform(2500, 4000)
    high = low * rng.uniform(1.2, 1.6)
    repeats = int(np.ceil(seconds / (chirp + gap)))
    return ["synth", f"{chirp:.3f}", "sine", f"{low:.0f}-{high:.0f}", "pad", "0", f"{gap:.3f}",
            "repeat", str(repeats)]  # fmt: skip


def _knock(rng: np.random.Generator, seconds: float) -> list[str]:
    hit, gap = rng.uniform(0.03, 0.06), rng.uniform(0.15, 0.4)
    repeats = int(np.ceil(seconds / (hit + gap)))
    return ["synth", f"{hit:.3f}", "pinknoise", "lowpass", f"{rng.uniform(150, 400):.0f}",
            "fade", "q", "0.002", f"{hit:.3f}", f"{hit * 0.8:.3f}", "pad", "0", f"{gap:.3f}",
            "repeat", str(repeats)]  # fmt: skip


SOX_SOUNDS: dict[str, Callable[[np.random.Generator, float], list[str]]] = {
    "siren": _siren,
    "engine": _engine,
    "rain": _rain,
    "wind": _wind,
    "alarm": _alarm,
    "birdsong": _birdsong,
    "knocking": _knock,
}
SCENE_CLASSES = (*SOX_SOUNDS, "announcement")
EVENT_CLASSES = ("alarm", "birdsong", "knocking", "siren", "announcement")


def environmental_sound(name: str, seconds: float, rng: np.random.Generator) -> np.ndarray:
    """A sound of class ``name`` at least ``seconds`` long (announcements may be shorter)."""
    if name == "announcement":
        recording = ALSA_DIR / f"{ALSA_VOICES[rng.integers(len(ALSA_VOICES))]}.wav"
        speed = rng.uniform(0.85, 1.2)
        return sox([str(recording)], ["speed", f"{speed:.3f}"])
    # sox starts every noise from the same seed (-R), so take a random stretch of a longer one
    start = rng.uniform(0, 1.0)
    audio = sox(["-n"], SOX_SOUNDS[name](rng, seconds + start))
    return audio[int(start * SAMPLE_RATE) :]


# --- clip assembly --------------------------------------------------------------------------


def trim_silence(audio: np.ndarray, threshold_db: float = -40.0) -> np.ndarray:
    """Cut leading and trailing samples more than ``threshold_db`` below the peak."""
    level = np.abs(audio)
    loud = np.flatnonzero(level > level.max() * 10 ** (threshold_db / 20))
    return audio[loud[0] : loud[-1] + 1] if loud.size else audio


def set_rms(audio: np.ndarray, dbfs: float) -> np.ndarray:
    """Scale ``audio`` to an RMS of ``dbfs`` decibels relative to full scale."""
    rms = float(np.sqrt(np.mean(audio.astype(np.float64) ** 2)))
    return (audio * (10 ** (dbfs / 20) / max(rms, 1e-9))).astype(np.float32)


def fade_edges(audio: np.ndarray, seconds: float = 0.01) -> np.ndarray:
    """Raised-cosine fade in and out over ``seconds`` (or a third of the clip if shorter)."""
    n = min(int(seconds * SAMPLE_RATE), len(audio) // 3)
    if n < 2:
        return audio
    ramp = (0.5 - 0.5 * np.cos(np.linspace(0, np.pi, n))).astype(np.float32)
    out = audio.copy()
    out[:n] *= ramp
    out[-n:] *= ramp[::-1]
    return out


def noise_floor(
    samples: int, rng: np.random.Generator, dbfs: float = NOISE_FLOOR_DBFS
) -> np.ndarray:
    """Quiet, slightly low-passed Gaussian noise."""
    noise = rng.standard_normal(samples + 1).astype(np.float32)
    return set_rms(noise[1:] + 0.7 * noise[:-1], dbfs)


def place(signal: np.ndarray, samples: int, rng: np.random.Generator) -> np.ndarray:
    """``signal`` at a random offset in ``samples`` zeros (cut to fit when longer)."""
    out = np.zeros(samples, dtype=np.float32)
    if len(signal) >= samples:
        start = rng.integers(len(signal) - samples + 1)
        return signal[start : start + samples].copy()
    offset = rng.integers(samples - len(signal) + 1)
    out[offset : offset + len(signal)] = signal
    return out


def clip_peak(audio: np.ndarray, peak: float = 0.99) -> np.ndarray:
    """Scale down (never up) so that ``|audio| <= peak``."""
    top = float(np.abs(audio).max())
    return audio * (peak / top) if top > peak else audio


# --- tasks ---------------------------------------------------------------------------------


@dataclass
class SynthTask:
    """A task in memory: metadata, label vocabulary and ``{split: {file: (audio, labels)}}``."""

    metadata: dict
    vocabulary: list[str]
    splits: dict[str, dict[str, tuple[np.ndarray, list]]]


def _metadata(name: str, kind: str, seconds: float, evaluation: list[str], about: str) -> dict:
    return {
        "task_name": name,
        "version": "synth-1",
        "embedding_type": kind,
        "prediction_type": "multiclass" if kind == "scene" else "multilabel",
        "split_mode": "trainvaltest",
        "splits": list(SPLITS),
        "sample_duration": seconds,
        "evaluation": evaluation,
        "mode": "full",
        "source": about,
    }


def speech_commands(rng: np.random.Generator, scale: float = 1.0) -> SynthTask:
    """Ten command words from 52 synthetic speakers (fewer when ``scale < 1``, at least 6),
    each word spoken twice by a training or test speaker (at other speeds and pitches),
    once by a validation speaker; speakers differ between splits."""
    people = speakers()
    if scale < 1:
        keep = max(6, round(len(people) * scale))
        people = [people[i] for i in sorted(rng.choice(len(people), keep, replace=False))]
    order = rng.permutation(len(people))
    test = max(2, round(len(people) * 0.25))
    valid = test + max(2, round(len(people) * 0.15))
    by_split = {
        "test": [people[i] for i in order[:test]],
        "valid": [people[i] for i in order[test:valid]],
        "train": [people[i] for i in order[valid:]],
    }
    renders = {"train": max(1, round(2 * scale)), "valid": 1, "test": 2}
    samples = SAMPLE_RATE
    splits: dict[str, dict] = {s: {} for s in SPLITS}
    jobs = [
        (s, p, w, r) for s in SPLITS for p in by_split[s] for w in WORDS for r in range(renders[s])
    ]
    with tempfile.TemporaryDirectory(prefix="natheear-speech-") as tmp:
        for split, person, word, take in tqdm(
            jobs, desc="speech commands", unit="clip", leave=False
        ):
            speed, pitch = rng.uniform(0.8, 1.35), rng.uniform(0.2, 0.8)
            voice = trim_silence(speak(person, word, speed, pitch, Path(tmp)))
            voice = set_rms(fade_edges(voice[: int(0.95 * samples)]), rng.uniform(-28, -18))
            audio = clip_peak(place(voice, samples, rng) + noise_floor(samples, rng))
            splits[split][f"{person.name}_{word}_{take}.wav"] = (audio, [word])
    about = (
        "spoken by espeak-ng voices "
        f"{sorted({p.voice for p in people if p.engine == 'espeak-ng'})} and flite voices "
        f"{list(FLITE_VOICES)} at speeds 0.8-1.35x and random pitch; test and valid speakers "
        "are unseen in training"
    )
    metadata = _metadata("synth_speech_commands", "scene", 1.0, ["top1_acc"], about)
    return SynthTask(metadata, list(WORDS), splits)


def _split_counts(total: int) -> dict[str, int]:
    """Clips per split (:data:`SPLIT_SHARES`), at least 2 in validation and test."""
    valid = max(2, round(SPLIT_SHARES["valid"] * total))
    test = max(2, round(SPLIT_SHARES["test"] * total))
    return {"train": total - valid - test, "valid": valid, "test": test}


def env_scenes(rng: np.random.Generator, scale: float = 1.0) -> SynthTask:
    """1-s scenes of eight environmental classes over a noise floor."""
    seconds, per_class = 1.0, max(5, round(150 * scale))
    samples = int(seconds * SAMPLE_RATE)
    counts = _split_counts(per_class)
    jobs = [(s, c, i) for c in SCENE_CLASSES for s in SPLITS for i in range(counts[s])]
    splits: dict[str, dict] = {s: {} for s in SPLITS}
    for split, name, index in tqdm(jobs, desc="environmental scenes", unit="clip", leave=False):
        sound = set_rms(fade_edges(environmental_sound(name, seconds, rng)), rng.uniform(-30, -18))
        audio = clip_peak(place(sound, samples, rng) + noise_floor(samples, rng))
        splits[split][f"{name}_{split}_{index:03d}.wav"] = (audio, [name])
    about = "sox-synthesised environmental sounds and the ALSA test recordings (announcements)"
    metadata = _metadata("synth_env_scenes", "scene", seconds, ["top1_acc"], about)
    return SynthTask(metadata, list(SCENE_CLASSES), splits)


def env_events(rng: np.random.Generator, scale: float = 1.0) -> SynthTask:
    """2-s clips with 1-2 events of five classes; labels carry onset and offset in ms."""
    seconds, total = 2.0, max(10, round(575 * scale))
    samples = int(seconds * SAMPLE_RATE)
    counts = _split_counts(total)
    splits: dict[str, dict] = {s: {} for s in SPLITS}
    jobs = [(s, i) for s in SPLITS for i in range(counts[s])]
    for split, index in tqdm(jobs, desc="environmental events", unit="clip", leave=False):
        audio = noise_floor(samples, rng, dbfs=rng.uniform(-42, -34))
        events = []
        names = rng.choice(EVENT_CLASSES, size=rng.integers(1, 3), replace=False)
        for name in names:
            length = rng.uniform(0.3, 1.0)
            sound = trim_silence(environmental_sound(str(name), length, rng))
            sound = sound[: int(length * SAMPLE_RATE)]
            sound = set_rms(fade_edges(sound), rng.uniform(-26, -16))
            start = int(rng.integers(0, samples - len(sound)))
            audio[start : start + len(sound)] += sound
            events.append(
                {
                    "label": str(name),
                    "start": 1000.0 * start / SAMPLE_RATE,
                    "end": 1000.0 * (start + len(sound)) / SAMPLE_RATE,
                }
            )
        events.sort(key=lambda e: e["start"])
        splits[split][f"events_{split}_{index:03d}.wav"] = (clip_peak(audio), events)
    about = "sound events from sox and the ALSA test recordings over background noise"
    evaluation = ["event_onset_200ms_fms", "segment_1s_er"]
    metadata = _metadata("synth_env_events", "event", seconds, evaluation, about)
    # sed_eval scoring is slow: validate every 10 epochs, as heareval does for DCASE 2016.
    metadata["evaluation_params"] = {"task_specific_param_grid": {"check_val_every_n_epoch": [10]}}
    return SynthTask(metadata, list(EVENT_CLASSES), splits)


BUILDERS: dict[str, Callable[[np.random.Generator, float], SynthTask]] = {
    "speech_commands": speech_commands,
    "env_scenes": env_scenes,
    "env_events": env_events,
}


def write_task(root: Path, task: SynthTask) -> Path:
    """Write ``task`` as ``root/<task_name>`` atomically (a temporary folder, then rename)."""
    name = task.metadata["task_name"]
    final = root / name
    root.mkdir(parents=True, exist_ok=True)
    tmp = temp_dir(root, f".{name}.")
    try:
        (tmp / "task_metadata.json").write_text(json.dumps(task.metadata, indent=2) + "\n")
        vocabulary = "".join(f"{i},{label}\n" for i, label in enumerate(task.vocabulary))
        (tmp / "labelvocabulary.csv").write_text("idx,label\n" + vocabulary)
        for split, files in task.splits.items():
            split_labels = {file: labels for file, (_, labels) in sorted(files.items())}
            (tmp / f"{split}.json").write_text(json.dumps(split_labels, indent=1) + "\n")
            folder = tmp / str(SAMPLE_RATE) / split
            folder.mkdir(parents=True)
            for file, (audio, _) in files.items():
                sf.write(str(folder / file), audio, SAMPLE_RATE, subtype="PCM_16")
        if final.exists():
            shutil.rmtree(final)
        tmp.rename(final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def synthesize(
    out: Path,
    tasks: tuple[str, ...] = TASKS,
    seed: int = 0,
    scale: float = 1.0,
    force: bool = False,
) -> list[Path]:
    """Write the chosen synthetic tasks into ``out``; existing ones are kept unless ``force``.

    Each task has its own random stream (``seed`` and its name), so a task is the same
    whichever other tasks are made.
    """
    check_tools()
    written = []
    for index, name in enumerate(TASKS):
        if name not in tasks:
            continue
        final = out / f"synth_{name}"
        if final.exists() and not force:
            written.append(final)
            continue
        rng = np.random.default_rng([seed, index])
        written.append(write_task(out, BUILDERS[name](rng, scale)))
    return written


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``synth`` subcommand."""
    parser = subparsers.add_parser(
        "synth",
        help="make small synthetic HEAR tasks (spoken commands, environmental scenes, events)",
        description=__doc__.split("\n\n")[0]
        + " Tasks: "
        + ", ".join(f"synth_{t}" for t in TASKS)
        + ". Existing task folders are kept unless --force.",
    )
    parser.add_argument("out", help="folder to write the task directories into")
    parser.add_argument("--tasks", nargs="+", choices=TASKS, default=list(TASKS))
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument(
        "--scale", type=float, default=1.0, help="size factor for the number of clips (default 1)"
    )
    parser.add_argument("--force", action="store_true", help="rewrite existing task folders")
    parser.set_defaults(handler=run)
    return parser


def run(args: argparse.Namespace) -> int:
    """Run ``synth``: exit 0 ok, 2 bad input or missing tools, 1 a tool failed."""
    if not 0 < args.scale <= 20:
        print("error: --scale must be in (0, 20]", file=sys.stderr)
        return 2
    try:
        paths = synthesize(Path(args.out), tuple(args.tasks), args.seed, args.scale, args.force)
    except SynthError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2 if isinstance(error, MissingTools) else 1
    for path in paths:
        print(path)
    return 0
