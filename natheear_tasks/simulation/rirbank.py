"""RIR banks on disk: scenes of room impulse responses with their geometry.

A scene is one array ``(1 + K, C, L)`` float32: row 0 the source RIR, rows 1..K the noise
RIRs (K = 1: localized noise; 3-5: diffuse noise), C channels (binaural: left, right;
Ambisonics: AmbiX W, Y, Z, X with SN3D).

Two layouts are read by :meth:`RirBank.open`:

* a natheear bank (written by :class:`RirBankWriter`, ``natheear-tasks rirs``)::

      bank.json       {"kind": "natheear-rirbank", "version": 1, "format": "binaural",
                       "sample_rate": 48000, "num_channels": 2, "channels": [...],
                       "count": N, "generator": {...}}       (written last: bank complete)
      scenes.jsonl    line i: scene i's record (file, geometry; see the README)
      rirs/000000.npy scene 0, float32 (1 + K, C, L)

* a GRAM-release folder: ``.npy`` files (searched recursively, sorted by path) each
  ``(1 + K, C, L)``; C = 2 is binaural, C = 4 Ambisonics (taken as AmbiX). Scene metadata
  where present: ``<stem>.json`` beside a file, or one ``metadata.jsonl`` in the folder with
  a ``file`` field (path relative to the folder); fields ``azimuth`` / ``elevation``
  (degrees, listener frame; also ``source_azimuth`` / ``source_elevation``), optionally
  ``distance``, ``rt60``, ``room_size``. The sample rate is GRAM's 32000 Hz unless given.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from natheear_tasks.atomic import atomic_write
from natheear_tasks.paths import escapes, name_problem

BANK_KIND = "natheear-rirbank"
BANK_VERSION = 1
BANK_FILE = "bank.json"
INDEX_FILE = "scenes.jsonl"
BUILD_FILE = "build.json"  # the description of a bank being built, checked on resume
RIR_DIR = "rirs"
GRAM_SAMPLE_RATE = 32000
FORMATS = {"binaural": ("left", "right"), "ambisonics": ("W", "Y", "Z", "X")}
CHANNEL_FORMATS = {len(channels): name for name, channels in FORMATS.items()}


class RirBankError(ValueError):
    """A folder that is not a readable RIR bank, or a bank that does not fit its use."""


def direction_vector(azimuth: float, elevation: float) -> np.ndarray:
    """Unit vector ``[x, y, z]`` (x forward, y left, z up) for azimuth/elevation in degrees."""
    az, el = np.deg2rad(azimuth), np.deg2rad(elevation)
    return np.array([np.cos(az) * np.cos(el), np.sin(az) * np.cos(el), np.sin(el)])


@dataclass
class RirScene:
    """One scene of a bank.

    Attributes:
        rirs: ``(1 + K, C, L)`` float32; row 0 the source RIR, rows 1..K the noise RIRs.
        source_azimuth: degrees, counter-clockwise from the listener's front (None: unknown).
        source_elevation: degrees, up from the listener's horizontal plane (None: unknown).
        source_distance: metres.
        room_size: ``(x, y, z)`` metres.
        rt60: target reverberation time, seconds.
        listener_position: ``(x, y, z)`` metres, room frame.
        listener_yaw: degrees, the listener's forward axis, counter-clockwise from room +x.
        noise_kind: ``"localized"`` or ``"diffuse"``.
        noise_directions: ``(azimuth, elevation)`` in degrees of each noise source, listener
            frame.
        record: the scene's full metadata record as stored.
    """

    rirs: np.ndarray
    source_azimuth: float | None = None
    source_elevation: float | None = None
    source_distance: float | None = None
    room_size: tuple[float, float, float] | None = None
    rt60: float | None = None
    listener_position: tuple[float, float, float] | None = None
    listener_yaw: float | None = None
    noise_kind: str | None = None
    noise_directions: list[tuple[float, float]] = field(default_factory=list)
    record: dict = field(default_factory=dict)

    @property
    def num_noise(self) -> int:
        """K, the number of noise RIRs."""
        return self.rirs.shape[0] - 1

    @property
    def source_direction(self) -> np.ndarray | None:
        """Unit vector ``[x, y, z]`` of the source in the listener frame, or None."""
        if self.source_azimuth is None or self.source_elevation is None:
            return None
        return direction_vector(self.source_azimuth, self.source_elevation)

    @classmethod
    def from_record(cls, rirs: np.ndarray, record: dict) -> RirScene:
        """Build a scene from an array and a natheear record (see the README)."""
        source = record.get("source", {})
        listener = record.get("listener", {})
        room = record.get("room", {})
        noise = record.get("noise", {})

        def tup(value):
            return None if value is None else tuple(float(v) for v in value)

        return cls(
            rirs=rirs,
            source_azimuth=source.get("azimuth"),
            source_elevation=source.get("elevation"),
            source_distance=source.get("distance"),
            room_size=tup(room.get("size")),
            rt60=room.get("rt60"),
            listener_position=tup(listener.get("position")),
            listener_yaw=listener.get("yaw"),
            noise_kind=noise.get("kind"),
            noise_directions=[(s["azimuth"], s["elevation"]) for s in noise.get("sources", [])],
            record=record,
        )


class RirBank:
    """Read access to an RIR bank (ours or a GRAM release); ``bank[i]`` is a :class:`RirScene`.

    Attributes:
        path: the bank folder.
        sample_rate: Hz.
        num_channels: C.
        format: ``"binaural"`` or ``"ambisonics"``.
        records: one metadata record per scene (no audio loaded).
        info: the bank's ``bank.json`` content (synthesized for GRAM releases).
    """

    def __init__(self, path: Path, info: dict, records: list[dict], files: list[Path]) -> None:
        self.path = path
        self.info = info
        self.records = records
        self.files = files
        self.sample_rate = int(info["sample_rate"])
        self.num_channels = int(info["num_channels"])
        self.format = info["format"]

    @classmethod
    def open(cls, path: str | Path, sample_rate: int | None = None) -> RirBank:
        """Open a natheear bank or a GRAM-release folder of ``.npy`` scenes.

        Args:
            path: the folder.
            sample_rate: the rate of a GRAM-release folder (default 32000); must match a
                natheear bank's own rate when given.
        Raises:
            RirBankError: not a bank, an unfinished bank, or inconsistent contents.
        """
        path = Path(path)
        if not path.is_dir():
            raise RirBankError(f"RIR bank {path} is not a folder")
        if (path / BANK_FILE).exists():
            bank = cls._open_natheear(path)
            if sample_rate is not None and sample_rate != bank.sample_rate:
                raise RirBankError(
                    f"RIR bank {path} is at {bank.sample_rate} Hz, not {sample_rate} Hz"
                )
            return bank
        if (path / BUILD_FILE).exists():
            raise RirBankError(
                f"RIR bank {path} is unfinished; rerun the `natheear-tasks rirs` command that "
                "started it to complete it"
            )
        return cls._open_gram(path, sample_rate or GRAM_SAMPLE_RATE)

    @classmethod
    def _open_natheear(cls, path: Path) -> RirBank:
        info = json.loads((path / BANK_FILE).read_text())
        if info.get("kind") != BANK_KIND or info.get("version") != BANK_VERSION:
            raise RirBankError(
                f"{path / BANK_FILE} is not a version-{BANK_VERSION} {BANK_KIND} description"
            )
        with open(path / INDEX_FILE) as f:
            records = [json.loads(line) for line in f if line.strip()]
        if len(records) != info["count"]:
            raise RirBankError(
                f"{path / INDEX_FILE} lists {len(records)} scenes, {BANK_FILE} says {info['count']}"
            )
        files = []
        for n, record in enumerate(records):
            name = record.get("file") if isinstance(record, dict) else None
            problem = name_problem(name)
            if problem is None and escapes(path / name, path):
                problem = "leads out of the bank through a symbolic link"
            if problem:
                raise RirBankError(
                    f"{path / INDEX_FILE} line {n + 1}: file {name!r} {problem}; an index lists "
                    f"scene files inside the bank, like {RIR_DIR}/000000.npy"
                )
            files.append(path / name)
        return cls(path, info, records, files)

    @classmethod
    def _open_gram(cls, path: Path, sample_rate: int) -> RirBank:
        files = sorted(path.rglob("*.npy"))
        if not files:
            raise RirBankError(
                f"{path} holds neither {BANK_FILE} (a natheear RIR bank) nor .npy scenes (a "
                "GRAM release); build a bank with `natheear-tasks rirs`"
            )
        shapes = [_npy_shape(file) for file in files]
        channels = shapes[0][1] if len(shapes[0]) == 3 else None
        bad = [
            (f, s)
            for f, s in zip(files, shapes, strict=True)
            if len(s) != 3 or s[1] != channels or not s[0]
        ]
        if bad or channels not in CHANNEL_FORMATS:
            file, shape = bad[0] if bad else (files[0], shapes[0])
            raise RirBankError(
                f"{file} has shape {shape}; every GRAM-release scene must be (1 + K, C, L) "
                f"with one C for the folder, 2 (binaural) or 4 (Ambisonics)"
            )
        shared = _read_jsonl(path / "metadata.jsonl")
        shared = {str(r["file"]): r for r in shared}
        records = []
        for file in files:
            rel = file.relative_to(path).as_posix()
            meta = dict(shared.get(rel, {}))
            sidecar = file.with_suffix(".json")
            if sidecar.exists():
                meta.update(json.loads(sidecar.read_text()))
            records.append(_gram_record(rel, meta))
        info = {
            "kind": "gram-release",
            "format": CHANNEL_FORMATS[channels],
            "sample_rate": sample_rate,
            "num_channels": channels,
            "channels": list(FORMATS[CHANNEL_FORMATS[channels]]),
            "count": len(files),
        }
        return cls(path, info, records, files)

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> RirScene:
        if not -len(self) <= index < len(self):
            raise IndexError(f"scene {index} out of range for a bank of {len(self)}")
        file = self.files[index]
        rirs = np.load(file)
        if rirs.ndim != 3 or rirs.shape[1] != self.num_channels or rirs.shape[0] < 1:
            raise RirBankError(
                f"{file} has shape {rirs.shape}; expected (1 + K, {self.num_channels}, L)"
            )
        return RirScene.from_record(rirs.astype(np.float32, copy=False), self.records[index])


def _npy_shape(file: Path) -> tuple[int, ...]:
    """Shape stored in a ``.npy`` header (the array is not read)."""
    with open(file, "rb") as f:
        major, _ = np.lib.format.read_magic(f)
        if major == 1:
            return np.lib.format.read_array_header_1_0(f)[0]
        return np.lib.format.read_array_header_2_0(f)[0]


def _read_jsonl(path: Path) -> list[dict]:
    if not path.exists():
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def _gram_record(rel: str, meta: dict) -> dict:
    """A natheear-style record from GRAM-release metadata (missing fields stay absent)."""
    azimuth = meta.get("azimuth", meta.get("source_azimuth"))
    elevation = meta.get("elevation", meta.get("source_elevation"))
    record: dict = {"file": rel, "source": {}, "room": {}, "gram": meta}
    if azimuth is not None and elevation is not None:
        record["source"] = {"azimuth": float(azimuth), "elevation": float(elevation)}
    if meta.get("distance") is not None:
        record["source"]["distance"] = float(meta["distance"])
    for key in ("rt60", "room_size"):
        if meta.get(key) is not None:
            record["room"]["size" if key == "room_size" else key] = meta[key]
    return record


def collate_scenes(
    scenes: Iterable[RirScene], max_noise: int = 5, length: int | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Stack scenes for :func:`natheear_tasks.simulation.mix.mix_scene`.

    Args:
        scenes: B scenes with the same channel count.
        max_noise: K, the padded number of noise RIR rows.
        length: L; RIRs are cut or zero-padded to it (default: the longest in the batch).
    Returns:
        ``source_rir (B, C, L)``, ``noise_rirs (B, K, C, L)``, ``noise_rir_mask (B, K)`` bool.
    """
    scenes = list(scenes)
    channels = scenes[0].rirs.shape[1]
    length = length or max(s.rirs.shape[2] for s in scenes)
    source = np.zeros((len(scenes), channels, length), np.float32)
    noise = np.zeros((len(scenes), max_noise, channels, length), np.float32)
    mask = np.zeros((len(scenes), max_noise), bool)
    for b, scene in enumerate(scenes):
        if scene.num_noise > max_noise:
            raise RirBankError(f"a scene has {scene.num_noise} noise RIRs, more than {max_noise}")
        n = min(length, scene.rirs.shape[2])
        source[b, :, :n] = scene.rirs[0, :, :n]
        noise[b, : scene.num_noise, :, :n] = scene.rirs[1:, :, :n]
        mask[b, : scene.num_noise] = True
    return source, noise, mask


class RirBankWriter:
    """Write a natheear bank scene by scene; resumable, safe for parallel writers.

    Each scene's array and record are written atomically (``rirs/NNNNNN.npy`` and
    ``.json``); :meth:`finalize` gathers the records into ``scenes.jsonl`` and writes
    ``bank.json`` last, so a bank with ``bank.json`` is complete.
    """

    def __init__(
        self, path: str | Path, format: str, sample_rate: int, count: int, generator: dict
    ) -> None:
        if format not in FORMATS:
            raise RirBankError(f"format must be one of {sorted(FORMATS)}, got {format!r}")
        self.path = Path(path)
        info = {
            "kind": BANK_KIND,
            "version": BANK_VERSION,
            "format": format,
            "sample_rate": int(sample_rate),
            "num_channels": len(FORMATS[format]),
            "channels": list(FORMATS[format]),
            "count": int(count),
            "generator": generator,
        }
        self.info = json.loads(json.dumps(info))  # as it reads back from disk

    def is_complete(self) -> bool:
        """True when the bank exists, finished, with this writer's description."""
        bank_file = self.path / BANK_FILE
        if not bank_file.exists():
            return False
        existing = json.loads(bank_file.read_text())
        if existing != self.info:
            raise RirBankError(
                f"{self.path} already holds a different RIR bank "
                f"({_differences(existing, self.info)}); choose another folder or remove it"
            )
        return True

    def start(self) -> None:
        """Create the folder (or check that a resumed build has the same description)."""
        if self.is_complete():
            return
        if self.path.exists() and any(self.path.iterdir()):
            state = self.path / BUILD_FILE
            if not state.exists():
                raise RirBankError(f"{self.path} exists and is not an RIR bank; choose another")
            existing = json.loads(state.read_text())
            if existing != self.info:
                raise RirBankError(
                    f"{self.path} holds an unfinished RIR bank with other options "
                    f"({_differences(existing, self.info)}); rerun with those or remove it"
                )
            return
        (self.path / RIR_DIR).mkdir(parents=True, exist_ok=True)
        atomic_write(self.path / BUILD_FILE, lambda f: f.write(_dumps(self.info)))

    def scene_file(self, index: int) -> Path:
        return self.path / RIR_DIR / f"{index:06d}.npy"

    def has_scene(self, index: int) -> bool:
        return self.scene_file(index).with_suffix(".json").exists()

    def write_scene(self, index: int, rirs: np.ndarray, record: dict) -> None:
        """Write scene ``index``: ``rirs (1 + K, C, L)`` and its record (array first)."""
        if rirs.ndim != 3 or rirs.shape[1] != self.info["num_channels"]:
            raise RirBankError(
                f"scene {index} has shape {rirs.shape}; expected "
                f"(1 + K, {self.info['num_channels']}, L)"
            )
        file = self.scene_file(index)
        array = np.ascontiguousarray(rirs, dtype=np.float32)
        atomic_write(file, lambda f: np.save(f, array))
        record = {"index": index, "file": f"{RIR_DIR}/{file.name}", **record}
        record["num_noise"] = int(rirs.shape[0] - 1)
        record["length"] = int(rirs.shape[2])
        atomic_write(file.with_suffix(".json"), lambda f: f.write(_dumps(record)))

    def finalize(self) -> RirBank:
        """Write the index and ``bank.json`` once every scene exists; return the open bank."""
        missing = [i for i in range(self.info["count"]) if not self.has_scene(i)]
        if missing:
            raise RirBankError(f"{len(missing)} scenes are not written yet (first: {missing[0]})")
        lines = b"".join(
            _dumps(json.loads(self.scene_file(i).with_suffix(".json").read_text()), indent=None)
            for i in range(self.info["count"])
        )
        atomic_write(self.path / INDEX_FILE, lambda f: f.write(lines))
        atomic_write(self.path / BANK_FILE, lambda f: f.write(_dumps(self.info)))
        for i in range(self.info["count"]):
            self.scene_file(i).with_suffix(".json").unlink()
        (self.path / BUILD_FILE).unlink()
        return RirBank.open(self.path)


def _dumps(obj: dict, indent: int | None = 2) -> bytes:
    return (json.dumps(obj, indent=indent, sort_keys=True) + "\n").encode()


def _differences(a: dict, b: dict) -> str:
    keys = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
    return ", ".join(f"{k}: {a.get(k)!r} vs {b.get(k)!r}" for k in keys)
