"""Published-layout SELD task folders for the evaluate and probe tests."""

from __future__ import annotations

import json
from pathlib import Path


def seld_label(frame: int, cls: int = 0, azimuth: float = 0.0) -> dict:
    """One SELD event of one 100-ms frame, in the published format: class ``cls`` of
    ``"ab"``, source 0, at ``azimuth`` degrees and elevation 0."""
    return {
        "label": "ab"[cls],
        "start": 100 * frame,
        "end": 100 * (frame + 1),
        "direction": [azimuth, 0.0],
        "source_idx": 0,
    }


def write_seld_task(task: Path, labels: dict, **changes) -> None:
    """A published-format SELD task folder (``accdoa``, classes ``a`` and ``b``) with the
    split files ``labels``; ``changes`` edit the metadata."""
    task.mkdir(parents=True, exist_ok=True)
    metadata = {
        "task_name": task.name,
        "embedding_type": "event",
        "prediction_type": "accdoa",
        "sample_duration": 2.0,
        "split_mode": "trainvaltest",
        "splits": list(labels),
        "evaluation": ["SELD"],
        "scoring_params": {"doa_threshold": 20, "average": "macro"},
        "source_dynamics": "dynamic",
        "_nb_label_frames_1s": 10,
        **changes,
    }
    (task / "task_metadata.json").write_text(json.dumps(metadata))
    (task / "labelvocabulary.csv").write_text("idx,label\n0,a\n1,b\n")
    for split, files in labels.items():
        (task / f"{split}.json").write_text(json.dumps(files))
