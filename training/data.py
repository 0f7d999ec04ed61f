"""Training clips: sources, decoding and loudness, and a resumable stream over ranks and workers.

Sources (``data.train``):

* webdataset tar shards: a pattern with braces (``shards/train-{000000..000869}.tar``),
  ``::``-separated lists, a glob (``shards/*.tar``) or a folder of ``.tar`` files. Samples
  are grouped by key as webdataset does; the first member with an audio extension
  (``flac``, ``wav``, ``ogg``, ``mp3``) is the clip.
* a folder of audio files (searched recursively), or a manifest: a text file with one
  path per line (relative paths are relative to the manifest; ``#`` starts a comment;
  lines naming ``.tar`` files are shards).

Each clip is decoded with soundfile, reduced to channel 0, resampled to 32 kHz, cut to
``clip_seconds`` (a random window of longer clips), scaled to an RMS of ``loudness_dbfs``
(silent clips stay silent) and zero-padded.

Order: every epoch permutes the units (shards, or files) with a generator seeded by
``(seed, epoch)`` and deals them to the ``world_size * num_workers`` readers (reader
``rank * num_workers + worker`` takes every such unit from its index on), so no clip is read
twice in an epoch. Clips inside a shard are read in a permutation seeded by
``(seed, epoch, shard)``. A reader's position is ``(epoch, clips read this epoch)``; it
travels with every batch, and a stream restarted from saved positions continues exactly.
Per-clip randomness (crop offset, scene) is seeded by ``(seed, epoch, unit, clip)``.

Per-clip vectors (CAT's stored regularization targets, ``target_suffix``): clip
``a/x.flac`` has a 1-D ``.npy`` vector in ``a/x.SUFFIX``; a clip of a shard has it in the
member ``KEY.SUFFIX`` of its sample. Every batch names its clips (``keys``: the file, or
``shard:KEY``).

Clips that cannot be decoded (or whose vector is missing or unreadable) are skipped with a
warning and counted; a reader that has failed on more than ``max_bad_fraction`` of
``max(clips read, 100)`` clips stops the run.
"""

from __future__ import annotations

import glob
import io
import logging
import math
import os
import signal
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from multiprocessing.synchronize import Event
from pathlib import Path
from typing import Protocol

import numpy as np
import soundfile as sf
import torch
import torchaudio.functional as AF
from torch import Tensor
from torch.utils.data import DataLoader, IterableDataset, get_worker_info
from webdataset.shardlists import expand_urls
from webdataset.tariterators import base_plus_ext

from hear_gram.audio import RESAMPLER
from hear_gram.features import SAMPLE_RATE
from training.rr_targets import TargetError, read_target, target_path

AUDIO_EXTENSIONS = ("flac", "wav", "ogg", "mp3")
MANIFEST_SUFFIXES = (".txt", ".lst", ".manifest")
MIN_CLIPS_FOR_FRACTION = 100

log = logging.getLogger(__name__)


class BadClipError(Exception):
    """A clip (or a file a clip needs, such as a noise recording) that cannot be used."""


class TooManyBadClipsError(RuntimeError):
    """More clips failed to decode than ``data.max_bad_fraction`` allows."""


# --- decoding --------------------------------------------------------------------------


def decode_audio(data: bytes | str | Path, what: str) -> tuple[np.ndarray, int]:
    """Decode an audio file (bytes or a path) with soundfile.

    Returns:
        ``(samples (C, T) float32, sample_rate)``.
    Raises:
        BadClipError: unreadable, empty or non-finite audio; the message names ``what``.
    """
    try:
        source = io.BytesIO(data) if isinstance(data, bytes) else data
        samples, rate = sf.read(source, dtype="float32", always_2d=True)
    except Exception as error:  # libsndfile reports corrupt data through several types
        raise BadClipError(f"{what}: cannot decode ({type(error).__name__}: {error})") from error
    if samples.shape[0] == 0:
        raise BadClipError(f"{what}: no samples")
    if not np.isfinite(samples).all():
        raise BadClipError(f"{what}: NaN or infinite samples")
    return samples.T, int(rate)


def prepare_clip(
    samples: np.ndarray,
    sample_rate: int,
    num_samples: int,
    loudness_dbfs: float,
    rng: np.random.Generator,
) -> tuple[Tensor, int]:
    """Channel 0, resampled to 32 kHz (the HEAR API's resampler), cut (random window) or
    zero-padded to ``num_samples``, at an RMS of ``loudness_dbfs`` over the audio part.

    Args:
        samples: ``(C, T)`` float32.
    Returns:
        ``(wave (num_samples,) float32, number of audio samples before the padding)``.
    """
    wave = torch.from_numpy(np.ascontiguousarray(samples[0]))
    if sample_rate != SAMPLE_RATE:
        wave = AF.resample(wave, sample_rate, SAMPLE_RATE, **RESAMPLER)
    if wave.shape[0] > num_samples:
        start = int(rng.integers(0, wave.shape[0] - num_samples + 1))
        wave = wave[start : start + num_samples]
    rms = wave.square().mean().sqrt()
    if rms > 1e-9:
        wave = wave * (10.0 ** (loudness_dbfs / 20.0) / rms)
    length = wave.shape[0]
    return torch.nn.functional.pad(wave, (0, num_samples - length)), length


# --- sources ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Unit:
    """What a reader takes as a whole: one webdataset shard or one audio file."""

    path: str
    is_shard: bool


def _is_audio(path: str) -> bool:
    return path.rsplit(".", 1)[-1].lower() in AUDIO_EXTENSIONS


def _units_from_paths(paths: list[str], origin: str) -> list[Unit]:
    units = []
    for path in paths:
        if path.endswith(".tar"):
            units.append(Unit(path, True))
        elif _is_audio(path):
            units.append(Unit(path, False))
        else:
            raise ValueError(
                f"{origin}: {path!r} is neither a .tar shard nor an audio file "
                f"({', '.join(AUDIO_EXTENSIONS)})"
            )
    missing = [u.path for u in units if not Path(u.path).is_file()]
    if missing:
        shown = ", ".join(missing[:3]) + (
            f" and {len(missing) - 3} more" if len(missing) > 3 else ""
        )
        raise ValueError(f"{origin}: {len(missing)} files do not exist: {shown}")
    return units


def open_source(spec: str) -> list[Unit]:
    """The units of a clip source (see the module docstring).

    Raises:
        ValueError: the source does not exist, is empty or names files that do not exist.
    """
    path = Path(spec)
    if path.is_dir():
        shards = sorted(str(p) for p in path.glob("*.tar"))
        if shards:
            return _units_from_paths(shards, spec)
        files = sorted(str(p) for p in path.rglob("*") if p.is_file() and _is_audio(str(p)))
        if not files:
            raise ValueError(f"{spec}: the folder holds no .tar shards and no audio files")
        return _units_from_paths(files, spec)
    if path.is_file() and path.suffix in MANIFEST_SUFFIXES:
        lines = [line.split("#", 1)[0].strip() for line in path.read_text().splitlines()]
        paths = [str(path.parent / line) for line in lines if line]
        if not paths:
            raise ValueError(f"{spec}: the manifest lists no files")
        return _units_from_paths(paths, spec)
    if any(c in spec for c in "*?[") and "{" not in spec:
        paths = sorted(glob.glob(spec))
    else:
        paths = expand_urls(spec)
    if not paths or (len(paths) == 1 and not Path(paths[0]).exists()):
        raise ValueError(
            f"data source {spec!r} matches nothing: give webdataset shards (a brace pattern, "
            "a glob or a folder of .tar files), a folder of audio files, or a manifest "
            f"({', '.join(MANIFEST_SUFFIXES)})"
        )
    return _units_from_paths(paths, spec)


def index_shard(path: str) -> list[tuple[str, int, int]]:
    """``(key, data offset, size)`` of each sample's audio member in a tar shard, in file
    order; samples without an audio member are left out.

    Raises:
        BadClipError: the tar file cannot be read.
    """
    import tarfile

    found: dict[str, tuple[int, int, int]] = {}
    try:
        with tarfile.open(path, "r:") as tar:
            for member in tar:
                if not member.isfile():
                    continue
                key, ext = base_plus_ext(member.name)
                if key is None or ext.lower() not in AUDIO_EXTENSIONS:
                    continue
                rank = AUDIO_EXTENSIONS.index(ext.lower())
                if key not in found or rank < found[key][0]:
                    found[key] = (rank, member.offset_data, member.size)
    except (tarfile.TarError, OSError) as error:
        raise BadClipError(f"{path}: unreadable tar shard ({error})") from error
    return [(key, offset, size) for key, (_, offset, size) in found.items()]


def index_members(path: str, suffix: str) -> dict[str, tuple[int, int]]:
    """``key -> (data offset, size)`` of a shard's members named ``KEY.suffix``.

    Raises:
        BadClipError: the tar file cannot be read.
    """
    import tarfile

    found = {}
    try:
        with tarfile.open(path, "r:") as tar:
            for member in tar:
                key, ext = base_plus_ext(member.name)
                if member.isfile() and key is not None and ext == suffix:
                    found[key] = (member.offset_data, member.size)
    except (tarfile.TarError, OSError) as error:
        raise BadClipError(f"{path}: unreadable tar shard ({error})") from error
    return found


def first_stored_target(units: list[Unit], suffix: str) -> np.ndarray:
    """The stored vector of the first clip of ``units[0]`` (to size a model's head).

    Raises:
        TargetError: it is missing or unreadable.
    """
    unit = units[0]
    if not unit.is_shard:
        return read_target(target_path(unit.path, suffix), unit.path)
    members = index_members(unit.path, suffix)
    if not members:
        raise TargetError(f"{unit.path} holds no *.{suffix} regularization targets")
    key, (offset, size) = next(iter(members.items()))
    return read_target(read_member(unit.path, offset, size), f"{unit.path}:{key}")


def read_member(path: str, offset: int, size: int) -> bytes:
    """Bytes of a tar member found by :func:`index_shard`."""
    with open(path, "rb") as f:
        f.seek(offset)
        return f.read(size)


class ClipIndex:
    """Random access to every clip of a source (noise recordings, say); shards are indexed
    when the index is built, so a corrupt one is reported at once."""

    def __init__(self, units: list[Unit]) -> None:
        self.entries: list[tuple[str, str, int, int]] = []
        for unit in units:
            if unit.is_shard:
                self.entries += [(unit.path, key, o, n) for key, o, n in index_shard(unit.path)]
            else:
                self.entries.append((unit.path, "", 0, 0))
        if not self.entries:
            raise ValueError("the source holds no audio clips")

    def __len__(self) -> int:
        return len(self.entries)

    def read(self, i: int) -> tuple[bytes | str, str]:
        """``(bytes or path, description)`` of clip ``i``, for :func:`decode_audio`."""
        path, key, offset, size = self.entries[i]
        if not key:
            return path, path
        return read_member(path, offset, size), f"{path}:{key}"


# --- the stream --------------------------------------------------------------------------


class ClipExtras(Protocol):
    """Per-clip additions to a batch (the scene of each clip), drawn in the reader."""

    def sample(self, rng: np.random.Generator, num_samples: int) -> dict: ...

    def collate(self, items: list[dict]) -> dict[str, Tensor]: ...


@dataclass
class ReaderState:
    """Where one reader is: its epoch, clips read in that epoch, and its failure counts."""

    epoch: int = 0
    position: int = 0
    read: int = 0
    bad: int = 0

    def as_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "position": self.position, "read": self.read, "bad": self.bad}


class ClipStream(IterableDataset):
    """Endless, resumable stream of batches of prepared clips for one rank.

    Each reader (DataLoader worker) yields whole batches: ``audio (B, T)``, ``audio_length
    (B,)``, ``rr_target (B, D)`` with ``target_suffix``, the collated extras, ``keys``
    (where each clip came from), and ``reader`` / ``state`` (its id and position after the
    batch). DataLoader hands batches out round-robin over workers, starting at physical
    worker 0; ``first_reader`` says which reader that is, so a resumed stream continues
    with the reader that was next.
    """

    def __init__(
        self,
        units: list[Unit],
        batch_size: int,
        num_samples: int,
        loudness_dbfs: float = -14.0,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        num_readers: int = 1,
        max_bad_fraction: float = 0.01,
        extras: ClipExtras | None = None,
        states: dict[int, ReaderState] | None = None,
        first_reader: int = 0,
        target_suffix: str | None = None,
    ) -> None:
        super().__init__()
        total = world_size * num_readers
        if len(units) < total:
            kind = "shards" if units and units[0].is_shard else "files"
            raise ValueError(
                f"{len(units)} {kind} cannot feed {total} readers ({world_size} ranks x "
                f"{num_readers} workers) without clips seen twice in an epoch: use fewer "
                "data.num_workers or split the data into more shards"
            )
        self.units = units
        self.batch_size = batch_size
        self.num_samples = num_samples
        self.loudness_dbfs = loudness_dbfs
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.num_readers = num_readers
        self.max_bad_fraction = max_bad_fraction
        self.extras = extras
        self.states = states or {}
        self.first_reader = first_reader
        self.target_suffix = target_suffix
        self._index: dict[str, list[tuple[str, int, int]]] = {}
        self._targets: dict[str, dict[str, tuple[int, int]]] = {}

    # Order ------------------------------------------------------------------------------

    def reader_units(self, reader: int, epoch: int) -> list[int]:
        """Indices of the units reader ``reader`` of this rank reads in ``epoch``."""
        order = np.random.default_rng([self.seed, epoch]).permutation(len(self.units))
        slot = self.rank * self.num_readers + reader
        return order[slot :: self.world_size * self.num_readers].tolist()

    def _shard_index(self, unit: int) -> list[tuple[str, int, int]]:
        path = self.units[unit].path
        if path not in self._index:
            try:
                self._index[path] = index_shard(path)
            except BadClipError as error:
                log.warning("skipping shard: %s", error)
                self._index[path] = []
        return self._index[path]

    def unit_clips(self, unit: int, epoch: int) -> list[int]:
        """Order in which the clips of ``unit`` are read in ``epoch``."""
        if not self.units[unit].is_shard:
            return [0]
        count = len(self._shard_index(unit))
        return np.random.default_rng([self.seed, epoch, unit]).permutation(count).tolist()

    def epoch_clips(self, reader: int, epoch: int) -> list[tuple[int, int]]:
        """``(unit, clip)`` pairs reader ``reader`` of this rank reads in ``epoch``, in order."""
        return [
            (unit, clip)
            for unit in self.reader_units(reader, epoch)
            for clip in self.unit_clips(unit, epoch)
        ]

    def _clips(self, reader: int, state: ReaderState) -> Iterator[tuple[int, int, int]]:
        """``(epoch, unit, clip)`` from ``state`` on, forever; advances ``state``."""
        while True:
            clips = self.epoch_clips(reader, state.epoch)
            if not clips:
                raise TooManyBadClipsError(
                    f"reader {reader} of rank {self.rank} has no readable clips in epoch "
                    f"{state.epoch}: its shards are empty or unreadable"
                )
            for unit, clip in clips[state.position :]:
                state.position += 1
                yield state.epoch, unit, clip
            state.epoch, state.position = state.epoch + 1, 0

    # Reading ----------------------------------------------------------------------------

    def _read(self, unit: int, clip: int) -> tuple[bytes | str, str]:
        source = self.units[unit]
        if not source.is_shard:
            return source.path, source.path
        key, offset, size = self._shard_index(unit)[clip]
        return read_member(source.path, offset, size), f"{source.path}:{key}"

    def _read_target(self, unit: int, clip: int, what: str) -> Tensor:
        source = self.units[unit]
        if source.is_shard:
            if source.path not in self._targets:
                self._targets[source.path] = index_members(source.path, self.target_suffix)
            key = self._shard_index(unit)[clip][0]
            if key not in self._targets[source.path]:
                raise BadClipError(f"{what}: no regularization target {key}.{self.target_suffix}")
            data = read_member(source.path, *self._targets[source.path][key])
        else:
            data = target_path(source.path, self.target_suffix)
            if not data.is_file():
                raise BadClipError(f"{what}: its regularization target {data} is missing")
        try:
            return torch.from_numpy(read_target(data, what))
        except TargetError as error:
            raise BadClipError(str(error)) from None

    def _item(self, epoch: int, unit: int, clip: int) -> dict:
        rng = np.random.default_rng([self.seed, epoch, unit, clip])
        data, what = self._read(unit, clip)
        samples, rate = decode_audio(data, what)
        wave, length = prepare_clip(samples, rate, self.num_samples, self.loudness_dbfs, rng)
        item = {"audio": wave, "audio_length": torch.tensor(length), "key": what}
        if self.target_suffix is not None:
            item["rr_target"] = self._read_target(unit, clip, what)
        if self.extras is not None:
            item.update(self.extras.sample(rng, self.num_samples))
        return item

    def _check_failures(self, reader: int, state: ReaderState, error: BadClipError) -> None:
        allowed = self.max_bad_fraction * max(state.read, MIN_CLIPS_FOR_FRACTION)
        if state.bad > allowed:
            raise TooManyBadClipsError(
                f"reader {reader} of rank {self.rank} could not use {state.bad} of the "
                f"{state.read} clips it read (more than data.max_bad_fraction="
                f"{self.max_bad_fraction} of max(read, {MIN_CLIPS_FOR_FRACTION})); last: "
                f"{error}. Check the data, or raise data.max_bad_fraction"
            )

    def batches(self, reader: int) -> Iterator[dict]:
        """Batches of reader ``reader``, from its saved state on."""
        state = ReaderState(**self.states.get(reader, ReaderState()).as_dict())
        clips = self._clips(reader, state)
        while True:
            items = []
            while len(items) < self.batch_size:
                epoch, unit, clip = next(clips)
                state.read += 1
                try:
                    items.append(self._item(epoch, unit, clip))
                except BadClipError as error:
                    state.bad += 1
                    log.warning(
                        "skipping clip (%d bad of %d read): %s", state.bad, state.read, error
                    )
                    self._check_failures(reader, state, error)
            batch = {k: torch.stack([item[k] for item in items]) for k in ("audio", "audio_length")}
            if self.target_suffix is not None:
                widths = {item["rr_target"].shape[0] for item in items}
                if len(widths) > 1:
                    raise TargetError(
                        f"stored regularization targets of different widths {sorted(widths)} "
                        f"in one batch ({[item['key'] for item in items]}): every clip's vector "
                        "must have the same size"
                    )
                batch["rr_target"] = torch.stack([item["rr_target"] for item in items])
            if self.extras is not None:
                batch.update(self.extras.collate(items))
            batch["keys"] = [item["key"] for item in items]
            batch["reader"] = reader
            batch["state"] = state.as_dict()
            yield batch

    def __iter__(self) -> Iterator[dict]:
        info = get_worker_info()
        physical = 0 if info is None else info.id
        yield from self.batches((self.first_reader + physical) % self.num_readers)


def _worker_sigterm(main_pid: int, releasing: Event, signum: int, _frame: object) -> None:
    """A data worker's SIGTERM: once the main process releases the workers (it is shutting
    them down), end as by default; before, the run is still going: pass the signal to the
    main process, which checkpoints after the current step (with the batches this worker
    still serves) and then stops the workers."""
    if releasing.is_set():
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)
    elif os.getppid() == main_pid:
        os.kill(main_pid, signum)


def _worker_init(main_pid: int, releasing: Event | None, _: int) -> None:
    # A process group of its own: Ctrl-C or a scheduler's SIGTERM to the training's group
    # reach only the main process, which checkpoints and then stops the workers.
    os.setpgid(0, 0)
    torch.set_num_threads(1)
    if releasing is not None:
        # SIGTERM to every process of the run (systemd's KillMode, pkill -f) must not kill
        # the workers under a main process that is checkpointing; SIGINT is the main
        # process's (a second one there stops at once).
        signal.signal(signal.SIGTERM, partial(_worker_sigterm, main_pid, releasing))
        signal.signal(signal.SIGINT, signal.SIG_IGN)


def make_loader(
    stream: ClipStream,
    num_workers: int,
    pin_memory: bool = False,
    releasing: Event | None = None,
) -> DataLoader:
    """A DataLoader over ``stream``: ``num_workers`` processes, one per reader (0 reads in
    the main process, as one reader).

    Args:
        releasing: a ``torch.multiprocessing.Event``. When given, a worker ignores SIGINT
            and passes a SIGTERM to the main process until the event is set, and ends on
            SIGTERM after; set it before the workers are shut down (they are sent SIGTERM
            when they do not stop in time, and at interpreter exit). Without it, workers
            keep the default handlers.
    """
    if max(1, num_workers) != stream.num_readers:
        raise ValueError(f"{num_workers} workers for a stream of {stream.num_readers} readers")
    return DataLoader(
        stream,
        batch_size=None,
        num_workers=num_workers,
        pin_memory=pin_memory,
        worker_init_fn=partial(_worker_init, os.getpid(), releasing) if num_workers else None,
        persistent_workers=num_workers > 0,
        prefetch_factor=2 if num_workers else None,
    )


def clip_samples(seconds: float) -> int:
    """Samples of a clip of ``seconds`` at 32 kHz."""
    return int(math.floor(seconds * SAMPLE_RATE + 0.5))
