"""HEAR-format source tasks (several rates, labelled clips) for the conversion tests and
benchmarks, synthesized with numpy."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import soundfile as sf


def _clip(rng: np.random.Generator, seconds: float, rate: int, kind: int) -> np.ndarray:
    t = np.arange(int(round(seconds * rate))) / rate
    tone = np.sin(2 * np.pi * (300 + 200 * kind) * t) * (0.5 + 0.5 * np.sin(2 * np.pi * 3 * t))
    return (0.3 * tone + 0.05 * rng.standard_normal(len(t))).astype(np.float32)


def write_task(
    root: Path,
    name: str = "toy-scene",
    kind: str = "scene",
    splits: tuple[str, ...] = ("train", "valid", "test"),
    files_per_split: int = 2,
    rates: tuple[int, ...] = (16000, 48000),
    seconds: float = 1.0,
    split_mode: str = "trainvaltest",
    subtype: str = "PCM_16",
) -> Path:
    """Write a mono HEAR task (scene or event), wavs of ``subtype``; return its folder."""
    task = root / name
    rng = np.random.default_rng(0)
    labels = ["beep", "hum"]
    metadata = {
        "task_name": name,
        "version": "v1",
        "embedding_type": kind,
        "prediction_type": "multiclass" if kind == "scene" else "multilabel",
        "split_mode": split_mode,
        "splits": list(splits),
        "sample_duration": seconds,
        "evaluation": ["top1_acc"] if kind == "scene" else ["event_onset_200ms_fms"],
    }
    task.mkdir(parents=True)
    (task / "task_metadata.json").write_text(json.dumps(metadata, indent=2))
    (task / "labelvocabulary.csv").write_text("idx,label\n0,beep\n1,hum\n")
    n = 0
    for split in splits:
        data = {}
        for i in range(files_per_split):
            file = f"{split}-{i}.wav"
            k = (n + i) % 2
            if kind == "scene":
                data[file] = [labels[k]]
            else:
                data[file] = [{"label": labels[k], "start": 100.0 + 50 * i, "end": 600.0}]
            clip_seed = int(rng.integers(1 << 30))
            for rate in rates:
                folder = task / str(rate) / split
                folder.mkdir(parents=True, exist_ok=True)
                audio = _clip(np.random.default_rng(clip_seed), seconds, rate, k)
                sf.write(folder / file, audio, rate, subtype=subtype)
        n += files_per_split
        (task / f"{split}.json").write_text(json.dumps(data))
    return task
