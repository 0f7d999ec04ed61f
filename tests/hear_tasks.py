"""Tiny HEAR-format task directories for tests (the layout heareval's runners read)."""

from __future__ import annotations

import json
import zlib
from pathlib import Path

import numpy as np
import soundfile as sf

LABELS = ["low", "high"]


def write_task(
    root: Path,
    name: str,
    embedding_type: str = "scene",
    channels: int = 1,
    sample_rate: int = 16000,
    seconds: float = 1.0,
    files_per_split: int = 3,
    splits: tuple[str, ...] = ("train", "valid", "test"),
) -> Path:
    """Write a task whose clips are tones (label "low" 300 Hz, "high" 2 kHz) with noise."""
    task = root / name
    rng = np.random.default_rng(zlib.crc32(name.encode()))  # the same in every process
    length = int(seconds * sample_rate)
    t = np.arange(length) / sample_rate
    for split in splits:
        folder = task / str(sample_rate) / split
        folder.mkdir(parents=True)
        labels = {}
        for i in range(files_per_split):
            label = LABELS[i % 2]
            freq = 300.0 if label == "low" else 2000.0
            audio = 0.3 * np.sin(2 * np.pi * freq * t)[:, None] + 0.01 * rng.standard_normal(
                (length, channels)
            )
            sf.write(
                folder / f"{split}{i}.wav", audio.astype(np.float32), sample_rate, subtype="FLOAT"
            )
            if embedding_type == "scene":
                labels[f"{split}{i}.wav"] = [label]
            else:
                labels[f"{split}{i}.wav"] = [{"label": label, "start": 100.0, "end": 600.0}]
        (task / f"{split}.json").write_text(json.dumps(labels))
    (task / "labelvocabulary.csv").write_text(
        "idx,label\n" + "".join(f"{i},{word}\n" for i, word in enumerate(LABELS))
    )
    metadata = {
        "task_name": name,
        "version": "test",
        "embedding_type": embedding_type,
        "prediction_type": "multiclass" if embedding_type == "scene" else "multilabel",
        "split_mode": "trainvaltest",
        "splits": list(splits),
        "sample_duration": seconds,
        "evaluation": ["top1_acc"] if embedding_type == "scene" else ["event_onset_200ms_fms"],
    }
    (task / "task_metadata.json").write_text(json.dumps(metadata))
    return task
