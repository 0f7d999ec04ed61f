"""Synthetic HEAR tasks: valid task directories, unseen test speakers, event times inside
the clips, determinism."""

import json

import numpy as np
import pytest
import soundfile as sf

from natheear_tasks.demo import synth
from natheear_tasks.tasks.taskdir import read_task

pytestmark = pytest.mark.slow


def test_synthetic_tasks_are_valid_hear_tasks(tmp_path):
    paths = synth.synthesize(tmp_path, scale=0.2)
    assert [p.name for p in paths] == [f"synth_{t}" for t in synth.TASKS]
    tasks = {p.name: read_task(p) for p in paths}  # natheear's full validation
    speech = tasks["synth_speech_commands"]
    assert speech.rates == [16000] and speech.metadata["sample_duration"] == 1.0
    speakers = {
        split: {name.rsplit("_", 2)[0] for name in speech.splits[split]} for split in synth.SPLITS
    }
    assert not speakers["test"] & speakers["train"] and not speakers["valid"] & speakers["train"]
    assert {lab for labels in speech.splits["test"].values() for lab in labels} == set(synth.WORDS)
    events = tasks["synth_env_events"]
    for labels in events.splits["train"].values():
        assert 1 <= len(labels) <= 3
        for event in labels:
            assert 0 <= event["start"] < event["end"] <= 4000.0
    for task in tasks.values():
        for entry in task.files[:20]:
            audio, _ = sf.read(entry.audio[16000].path)
            assert 0.01 < np.abs(audio).max() <= 1.0  # audible, not clipped


def test_synthesis_is_deterministic_and_keeps_existing_tasks(tmp_path):
    first = synth.synthesize(tmp_path / "a", tasks=("env_events",), seed=3, scale=0.15)[0]
    second = synth.synthesize(tmp_path / "b", tasks=("env_events",), seed=3, scale=0.15)[0]
    files = sorted(p.relative_to(first) for p in first.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(second) for p in second.rglob("*") if p.is_file())
    for rel in files:
        assert (first / rel).read_bytes() == (second / rel).read_bytes(), rel
    marker = first / "task_metadata.json"
    marker.write_text(json.dumps({"kept": True}))
    synth.synthesize(tmp_path / "a", tasks=("env_events",), seed=3, scale=0.15)
    assert json.loads(marker.read_text()) == {"kept": True}
