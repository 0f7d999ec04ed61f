"""Convert a HEAR task into a naturalistic binaural or Ambisonics task (or a localization
task).

Data flow: validate the source task, the RIR bank and the noise in full (nothing is
written on bad input) -> the RIR bank (``--rirs``, or simulated into a cache) -> per file:
a scene plan from the seed and the file's identity (bank scene, SNR, noise), then for every
sample rate the dry clip and noise through the scene's RIRs
(:func:`natheear_tasks.simulation.mix.mix_scene_spectra`; files run sorted by bank scene, so the RIR
spectra are computed once per scene and rate), level-matched and written -> the task files,
written last. Each worker process converts its files in a two-thread pipeline: it mixes,
while an I/O thread reads the next file, synthesizes its noise and level-matches and writes
the files already mixed (:func:`_convert_files`).

Resumable and idempotent: the output is built in ``OUT/<name>.partial/``; a file is done
once its scene record is in the completion journal (:mod:`natheear_tasks.tasks.journal`), which
is appended only after the file's wavs are written, so a killed run resumes where it
stopped and rewrites any wav it left half-written; the folder is renamed to ``OUT/<name>``
only when every file of every shard is done, after its task files are written and its work
files (journal, job file) removed (:func:`finalize`, through
:mod:`natheear_tasks.tasks.publish`). Shards (``num_shards``,
``shard_index``) split the files round-robin; the shard that completes the set finalizes
the task.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from natheear_tasks.atomic import write_bytes
from natheear_tasks.exits import folder_bytes, space_problem
from natheear_tasks.formats.wav import wav_bytes
from natheear_tasks.paths import name_problem
from natheear_tasks.pool import run_jobs
from natheear_tasks.seeding import generator
from natheear_tasks.simulation.hrtf import KEMAR, load_hrtf
from natheear_tasks.simulation.mix import (
    NOISE_FADE_SECONDS,
    fft_length,
    mix_scene_spectra,
    rir_spectrum,
    scene_kernels,
)
from natheear_tasks.simulation.noise import NoiseFolder, SynthesizedNoise, resample
from natheear_tasks.simulation.rirbank import FORMATS, RirBank, RirBankError
from natheear_tasks.simulation.rirs import SimulationSettings, bank_generator, build_bank
from natheear_tasks.tasks import localize
from natheear_tasks.tasks.journal import Journal, read_journal
from natheear_tasks.tasks.publish import (
    OutputError,
    begin,
    check_output,
    publish,
    published_description,
    remove_work_files,
)
from natheear_tasks.tasks.taskdir import (
    METADATA,
    VOCABULARY,
    FileEntry,
    Task,
    atomic_write_bytes,
    atomic_write_json,
    read_task,
)

BYTES_PER_SAMPLE = {"PCM_16": 2, "PCM_24": 3, "PCM_32": 4, "FLOAT": 4, "DOUBLE": 8}
SNR_DB = (5.0, 40.0)
SCENES_FILE = "scenes.jsonl"
PEAK = 0.99  # output peak limit (PCM wavs clip at 1)
DEFAULT_BANK_SIZE = 1000
JOB_FILES = 32  # most files a worker converts in one job (one pipeline, see _convert_files)
MAX_PENDING_WRITES = 2  # files mixed but not yet written, per worker
FORMAT_VERSION = 2  # 2: new synthesized noise and PCM_16 rounding (output bytes differ from 1)


class OptionError(ValueError):
    """Command-line options that do not fit together or do not fit the input."""


@dataclass
class Options:
    """What a conversion does (see ``natheear-tasks convert --help``)."""

    format: str
    seed: int = 0
    workers: int = 1
    rirs: str | None = None
    noise: str | None = None
    hrtf: str = KEMAR
    sample_rates: list[int] | None = None
    num_shards: int = 1
    shard_index: int = 0
    bank_size: int | None = None
    name: str | None = None
    localization: bool = False


@dataclass
class Summary:
    """What a run did."""

    task: Path
    files: int = 0  # converted in this run
    skipped: int = 0  # already converted (resumed)
    audio_seconds: float = 0.0  # source audio converted in this run, at one rate
    wall_seconds: float = 0.0
    complete: bool = False  # the whole task is finished
    bank: Path | None = None
    notes: list[str] = field(default_factory=list)


def cache_dir() -> Path:
    """Where simulated RIR banks are kept: ``$NATHEEAR_CACHE``, else
    ``$XDG_CACHE_HOME/natheear_tasks``, else ``~/.cache/natheear_tasks``."""
    if os.environ.get("NATHEEAR_CACHE"):
        return Path(os.environ["NATHEEAR_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "natheear_tasks"


def _check_options(options: Options) -> None:
    if options.format not in FORMATS:
        raise OptionError(f"--format must be one of {sorted(FORMATS)}, got {options.format!r}")
    if options.workers < 1:
        raise OptionError(f"--workers must be at least 1, got {options.workers}")
    if options.num_shards < 1 or not 0 <= options.shard_index < options.num_shards:
        raise OptionError(
            f"--shard-index must be in [0, --num-shards); got {options.shard_index} of "
            f"{options.num_shards}"
        )
    if options.bank_size is not None and options.bank_size < 1:
        raise OptionError(f"--bank-size must be at least 1, got {options.bank_size}")
    if options.rirs and options.bank_size is not None:
        raise OptionError("--bank-size applies to simulated banks; leave it out with --rirs")
    if options.rirs and options.hrtf != KEMAR:
        raise OptionError("--hrtf applies to simulated banks; a bank given with --rirs has its own")
    problem = None if options.name is None else name_problem(options.name, single=True)
    if problem:
        raise OptionError(
            f"--name {options.name!r} {problem}; give a plain folder name (the task goes to "
            "OUT/<name>)"
        )


def output_name(task: Task, options: Options) -> str:
    """The output task's folder name: ``--name``, else ``<task>-<format>`` (or
    ``<task>-localization-<format>``)."""
    if options.name:
        return options.name
    kind = f"localization-{options.format}" if options.localization else options.format
    return f"{task.path.name}-{kind}"


@dataclass
class Job:
    """A validated conversion, ready to run."""

    task: Task
    options: Options
    out: Path
    bank: RirBank | None  # None: simulated on run, at bank_path
    bank_path: Path
    bank_request: dict | None  # how to simulate it
    noise: NoiseFolder | SynthesizedNoise
    description: dict

    @property
    def final(self) -> Path:
        return self.out / output_name(self.task, self.options)

    @property
    def partial(self) -> Path:
        return self.final.with_name(self.final.name + ".partial")


def prepare(source: str | Path, out: str | Path, options: Options) -> Job:
    """Validate everything a conversion needs; writes nothing.

    Raises:
        TaskError, RirBankError, NoiseError, HrtfError, OptionError, OutputError: bad input
            (OutputError: OUT or OUT/<name> holds something else), with a
        message naming every problem and its fix.
    """
    _check_options(options)
    task = read_task(source, options.sample_rates)
    if options.localization and task.metadata["embedding_type"] != "scene":
        raise OptionError(
            f"{task.path.name} is an {task.metadata['embedding_type']} task; localization "
            "tasks are made from scene tasks (one direction per clip)"
        )
    top_rate = max(task.rates)
    noise = NoiseFolder(options.noise) if options.noise else SynthesizedNoise()
    if options.rirs:
        bank = RirBank.open(options.rirs)
        bank_path, request = Path(options.rirs), None
        if bank.format != options.format:
            raise RirBankError(
                f"--rirs {options.rirs} holds {bank.format} RIRs; --format is {options.format}"
            )
        if bank.sample_rate < top_rate:
            raise RirBankError(
                f"--rirs {options.rirs} is at {bank.sample_rate} Hz, below the task's "
                f"{top_rate} Hz; use a bank at >= {top_rate} Hz or --sample-rates "
                f"{' '.join(str(r) for r in task.rates if r <= bank.sample_rate) or 'LOWER'}"
            )
        if options.localization:
            unknown = [i for i, r in enumerate(bank.records) if "azimuth" not in r["source"]]
            if unknown:
                raise RirBankError(
                    f"--rirs {options.rirs}: {len(unknown)} scenes have no source direction "
                    f"(first: {bank.files[unknown[0]]}); localization needs them"
                )
        bank_identity = {k: v for k, v in bank.info.items() if k != "channels"}
        if bank.info.get("kind") == "gram-release":
            bank_identity["folder"] = bank.path.name
    else:
        hrtf = load_hrtf(options.hrtf) if options.format == "binaural" else None
        count = options.bank_size or min(DEFAULT_BANK_SIZE, len(task.files))
        settings = SimulationSettings()
        generator_info = bank_generator(options.format, options.seed, settings, hrtf)
        digest = generator_info.get("hrtf", {}).get("digest", "foa")
        bank_path = (
            cache_dir()
            / "rirbanks"
            / (f"{options.format}-{top_rate}hz-{count}-seed{options.seed}-{digest}")
        )
        request = {"count": count, "sample_rate": top_rate, "hrtf": hrtf, "settings": settings}
        bank = None
        bank_identity = {
            "kind": "natheear-rirbank",
            "format": options.format,
            "sample_rate": top_rate,
            "count": count,
            "generator": generator_info,
        }
    description = {
        "version": FORMAT_VERSION,
        "source_task": task.metadata["task_name"],
        "format": options.format,
        "channels": list(FORMATS[options.format]),
        "seed": options.seed,
        "sample_rates": task.rates,
        "snr_db": list(SNR_DB),
        "noise_fade_seconds": NOISE_FADE_SECONDS,
        "noise": noise.describe(),
        "rir_bank": json.loads(json.dumps(bank_identity)),
        "localization": options.localization,
        "level": "mixture RMS = dry clip RMS, then peak <= 0.99",
    }
    job = Job(task, options, Path(out), bank, bank_path, request, noise, description)
    check_output(job.final, job.description)
    if not job.final.exists():
        channels = len(FORMATS[options.format])
        needed = sum(
            audio.frames * channels * BYTES_PER_SAMPLE.get(audio.subtype, 4)
            for entry in task.files
            for audio in entry.audio.values()
        )  # this shard's part and the other shards' alike: the whole task comes here
        room = space_problem(Path(out), needed, folder_bytes(job.partial))
        if room:
            raise OutputError(room)
    return job


# --- per-file work (runs in worker processes) --------------------------------------------

_WORKER: dict = {}


@dataclass(frozen=True)
class WorkerSetup:
    """What a worker needs of the job. Kept small: a spawned worker's start-up arguments
    that overflow the pipe (64 KiB) hold the parent until that worker has imported
    everything, so the workers would start one after the other."""

    seed: int
    noise: NoiseFolder | SynthesizedNoise
    partial: Path
    bank_path: Path
    rate: int  # the rate at which a job's seconds of audio are counted

    @classmethod
    def of(cls, job: Job) -> WorkerSetup:
        return cls(job.options.seed, job.noise, job.partial, job.bank_path, job.task.rates[0])


def _start_worker(setup: WorkerSetup) -> None:
    bank = RirBank.open(setup.bank_path)
    _stop_worker()
    _WORKER.update(setup=setup, bank=bank, journal=Journal(setup.partial), spectra=(None, {}))
    _rirs_at.cache_clear()


def _stop_worker() -> None:
    if "journal" in _WORKER:
        _WORKER["journal"].close()
    _WORKER.clear()


@lru_cache(maxsize=64)
def _rirs_at(index: int, rate: int) -> np.ndarray:
    bank: RirBank = _WORKER["bank"]
    return resample(bank[index].rirs, bank.sample_rate, rate)


def _spectra_at(index: int, rate: int, length: int) -> tuple[torch.Tensor, int]:
    """The spectra of bank scene ``index``'s kernels
    (:func:`natheear_tasks.simulation.mix.scene_kernels`) at ``rate`` for clips of ``length``
    samples, and the FFT size; kept (one length per rate) while files of that scene and length
    follow one another."""
    scene, cache = _WORKER["spectra"]
    if scene != index:
        cache = {}
        _WORKER["spectra"] = (index, cache)
    if rate not in cache or cache[rate][0] != length:
        rirs = torch.from_numpy(_rirs_at(index, rate))
        mask = torch.ones(1, rirs.shape[0] - 1, dtype=torch.bool)
        kernels = scene_kernels(rirs[None, 0], rirs[None, 1:], mask)
        n = fft_length(length, rirs.shape[-1])
        cache[rate] = length, rir_spectrum(kernels, n), n
    return cache[rate][1:]


def plan(seed: int, identity: str, bank_size: int) -> dict:
    """The scene of one file: a bank scene and an SNR, from the seed and the file only."""
    rng = generator(seed, "scene", identity)
    return {
        "bank_scene": int(rng.integers(bank_size)),
        "snr_db": round(float(rng.uniform(*SNR_DB)), 4),
    }


def _prepare_file(entry: FileEntry) -> tuple[dict, dict, dict[int, tuple]]:
    """A file's scene plan, its noise record and per rate its dry clip and noise, ``(T,)``
    float32 each (the I/O thread's part: reading and noise synthesis)."""
    setup: WorkerSetup = _WORKER["setup"]
    seed = setup.seed
    scene = plan(seed, entry.identity, len(_WORKER["bank"]))
    lengths = {rate: audio.frames for rate, audio in entry.audio.items()}
    noises, noise_record = setup.noise.draw(generator(seed, "noise", entry.identity), lengths)
    clips = {}
    for rate, audio in entry.audio.items():
        dry, _ = sf.read(str(audio.path), dtype="float32", always_2d=True)
        clips[rate] = dry[:, 0], noises[rate]
    return scene, noise_record, clips


def _mix_file(scene: dict, clips: dict[int, tuple]) -> dict[int, np.ndarray]:
    """The mixture ``(C, T)`` at every rate (this thread's part: the convolutions); sets the
    scene's SNR to None where the bank scene has no noise RIRs."""
    index = scene["bank_scene"]
    if _rirs_at(index, min(clips)).shape[0] == 1:
        scene["snr_db"] = None  # no noise RIRs (a GRAM-release scene may have none): no noise
    snr = torch.tensor([scene["snr_db"] or 0.0])
    mixtures = {}
    for rate, (dry, noise) in clips.items():
        spectra, n = _spectra_at(index, rate, len(dry))
        dry, noise = torch.from_numpy(dry)[None], torch.from_numpy(noise)[None]
        mixtures[rate] = mix_scene_spectra(dry, noise, spectra, n, snr, rate)[0].numpy()
    return mixtures


def _write_file(
    entry: FileEntry,
    scene: dict,
    noise_record: dict,
    clips: dict[int, tuple],
    mixtures: dict[int, np.ndarray],
) -> None:
    """Level-match and write a file's wavs, then its journal line: from then on the file
    counts as done (the I/O thread's part)."""
    partial = _WORKER["setup"].partial
    gains = {}
    for rate, mixture in mixtures.items():
        gain = _level(clips[rate][0], mixture)
        gains[str(rate)] = round(20 * math.log10(gain), 4) if gain > 0 else None
        path = partial / str(rate) / entry.split / entry.name
        write_bytes(path, wav_bytes((mixture * gain).T, rate, entry.audio[rate].subtype))
    record = {
        "split": entry.split,
        "file": entry.name,
        **scene,
        "scene": _WORKER["bank"].records[scene["bank_scene"]],
        "noise": noise_record,
        "gain_db": gains,
    }
    _WORKER["journal"].append(record)


def _convert_files(entries: list[FileEntry]) -> tuple[int, float]:
    """Convert files one after the other; returns the number of files and the seconds of
    audio (at one rate).

    A pipeline of two threads: an I/O thread reads the next file and draws its noise, then
    level-matches and writes the files already mixed, while this thread mixes the current
    one. The I/O thread runs its tasks one at a time in submission order, so each file's
    wavs are written before its journal line.
    """
    rate = _WORKER["setup"].rate
    writes: deque[Future] = deque()
    with ThreadPoolExecutor(1, thread_name_prefix="natheear-io") as io:
        inputs = io.submit(_prepare_file, entries[0])
        for i, entry in enumerate(entries):
            scene, noise_record, clips = inputs.result()
            if i + 1 < len(entries):
                inputs = io.submit(_prepare_file, entries[i + 1])
            mixtures = _mix_file(scene, clips)
            writes.append(io.submit(_write_file, entry, scene, noise_record, clips, mixtures))
            while len(writes) > MAX_PENDING_WRITES:
                writes.popleft().result()
        for write in writes:
            write.result()
    return len(entries), sum(entry.audio[rate].frames for entry in entries) / rate


def _level(dry: np.ndarray, mixture: np.ndarray) -> float:
    """Gain giving the mixture the dry clip's RMS, limited to a peak of 0.99."""
    rms_mix = float(np.sqrt(np.mean(mixture.astype(np.float64) ** 2)))
    if rms_mix == 0:
        return 1.0
    gain = float(np.sqrt(np.mean(dry.astype(np.float64) ** 2))) / rms_mix
    peak = float(np.abs(mixture).max()) * gain
    return gain * min(1.0, PEAK / peak) if peak > 0 else gain


def _done(partial: Path) -> dict[tuple[str, str], dict]:
    """The records of the files already converted, by ``(split, file)``."""
    return {(r["split"], r["file"]): r for r in read_journal(partial)}


# --- the run -----------------------------------------------------------------------------


def run(job: Job) -> Summary:
    """Convert this shard's remaining files; finalize the task when every file is done."""
    started = time.time()
    summary = Summary(task=job.final, bank=job.bank_path)
    if job.final.exists():
        summary.complete = True
        summary.skipped = len(job.task.files)
        summary.notes.append(f"{job.final} is already complete")
        if remove_work_files(job.final):  # left by a publish killed under the old order
            summary.notes.append(f"removed the work files a killed run left in {job.final}")
        return summary
    if published_description(job.partial) == job.description:
        summary.skipped = len(job.task.files)  # every file is done: only publishing is left
    else:
        _convert_shard(job, summary)
    summary.complete = finalize(job)
    summary.wall_seconds = time.time() - started
    if not summary.complete:
        summary.notes.append(
            f"other shards still have files to convert; {job.partial} is finalized by the "
            "last one (or by rerunning without --num-shards once all are done)"
        )
    return summary


def _convert_shard(job: Job, summary: Summary) -> None:
    """Convert this shard's files that the journal does not list yet."""
    bank = job.bank
    if bank is None:
        request = job.bank_request
        bank = build_bank(
            job.bank_path,
            job.options.format,
            request["sample_rate"],
            request["count"],
            job.options.seed,
            request["hrtf"],
            request["settings"],
            job.options.workers,
        )
    begin(job.final, job.description)
    mine = job.task.files[job.options.shard_index :: job.options.num_shards]
    done = _done(job.partial)
    todo = [e for e in mine if (e.split, e.name) not in done]
    # files of one bank scene and length one after the other: each worker resamples the
    # scene's RIRs and computes their spectra once
    todo.sort(
        key=lambda e: (
            plan(job.options.seed, e.identity, len(bank))["bank_scene"],
            [e.audio[rate].frames for rate in job.task.rates],
        )
    )
    folders = {(job.partial / str(r) / e.split / e.name).parent for e in todo for r in e.audio}
    for folder in folders:
        folder.mkdir(parents=True, exist_ok=True)
    summary.skipped = len(mine) - len(todo)
    # a few jobs per worker at least, so that the workers finish together
    size = max(1, min(JOB_FILES, math.ceil(len(todo) / (4 * job.options.workers))))
    try:
        for files, seconds in run_jobs(
            _convert_files,
            [todo[i : i + size] for i in range(0, len(todo), size)],
            job.options.workers,
            initializer=_start_worker,
            initargs=(WorkerSetup.of(job),),
            desc=f"{job.final.name}",
            unit="file",
            size=len,
        ):
            summary.files += files
            summary.audio_seconds += seconds
    finally:
        _stop_worker()  # this process's journal, when it converted the files itself


def finalize(job: Job) -> bool:
    """Publish ``OUT/<name>`` once every file is in the journal: write the task files (the
    metadata last), remove the work files (journal, job file, stray temporaries), rename.

    A run killed between these steps leaves ``.partial`` with its task files written, which
    a rerun publishes; the published task never holds work files.
    """
    partial = job.partial
    try:
        if published_description(partial) != job.description:
            done = _done(partial)
            if any((e.split, e.name) not in done for e in job.task.files):
                return job.final.exists()  # True when another shard finished first
            records = [done[e.split, e.name] for e in job.task.files]
            _write_task_files(job, records)
        publish(job.final)
    except (FileNotFoundError, OSError):
        if job.final.exists():  # another shard finished first
            return True
        raise
    return True


def _write_task_files(job: Job, records: list[dict]) -> None:
    task, partial = job.task, job.partial
    metadata = dict(task.metadata)
    metadata["task_name"] = job.final.name
    metadata["natheear"] = job.description
    if job.options.localization:
        metadata, vocabulary, splits = localize.task_files(metadata, task, records)
        for split, data in splits.items():
            atomic_write_json(partial / f"{split}.json", data, indent=None)
        atomic_write_bytes(partial / VOCABULARY, vocabulary.encode())
    else:
        for split, text in task.split_texts.items():
            atomic_write_bytes(partial / f"{split}.json", text.encode())
        atomic_write_bytes(partial / VOCABULARY, task.vocabulary_text.encode())
    lines = "".join(json.dumps(r, sort_keys=True) + "\n" for r in records)
    atomic_write_bytes(partial / SCENES_FILE, lines.encode())
    atomic_write_json(partial / METADATA, metadata, indent=2)
