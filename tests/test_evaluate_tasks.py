"""``evaluate``'s task folders: what :func:`~natheear_tasks.evaluation.discovery.find_tasks`
accepts (SELD tasks checked before any embedding), that names read from a task folder
cannot lead outside it, and SELD scores read back from the probe's output."""

import json

import numpy as np
import pytest
from evaluate_helpers import seld_label

from natheear_tasks.evaluation import doa_probe
from natheear_tasks.evaluation.discovery import find_tasks
from natheear_tasks.evaluation.errors import ScoreUnavailable, UsageError
from natheear_tasks.evaluation.task_scores import score_entry


def _localization_task(root, splits: object) -> None:
    task = root / "tasks" / "loc"
    task.mkdir(parents=True)
    metadata = {
        "embedding_type": "scene",
        "prediction_type": "localization",
        "split_mode": "trainvaltest",
        "splits": splits,
        "evaluation": ["mean_doa_error_deg", "median_doa_error_deg"],
    }
    (task / "task_metadata.json").write_text(json.dumps(metadata))


@pytest.mark.parametrize(
    "split, problem",
    [
        ("../../outside", "must be a single name, without /"),
        ("..", "has an empty, '.' or '..' part"),
        ("/tmp/outside", "is an absolute path"),
        (7, "must be a string"),
    ],
)
def test_find_tasks_refuses_split_names_that_lead_outside_the_task(tmp_path, split, problem):
    # A valid split file waits outside the task folder: it used to be read as the split.
    (tmp_path / "outside.json").write_text(json.dumps({"a.wav": [1.0, 0.0, 0.0]}))
    _localization_task(tmp_path, ["train", split])
    with pytest.raises(UsageError) as error:
        find_tasks(tmp_path / "tasks")
    assert f"loc: split name {split!r} {problem}" in str(error.value)


@pytest.mark.parametrize("splits", ["train", [], {"train": 1}])
def test_find_tasks_needs_a_list_of_splits(tmp_path, splits):
    _localization_task(tmp_path, splits)
    with pytest.raises(UsageError, match="'splits' must be a non-empty list of split names"):
        find_tasks(tmp_path / "tasks")


def _embeddings(folder, split: str, labels: dict) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{split}.json").write_text(json.dumps(labels))
    for name in labels:
        path = folder / split / f"{name}.embedding.npy"
        path.parent.mkdir(parents=True, exist_ok=True)
        np.save(path, np.ones(4, np.float32))


@pytest.mark.parametrize(
    "split, file", [("../../outside", "a.wav"), ("train", "../../../outside.wav")]
)
def test_doa_probe_reads_nothing_outside_the_embeddings(tmp_path, split, file):
    embed = tmp_path / "deep" / "er" / "embed"
    # What the hostile names point at exists (and used to be read as the split).
    _embeddings(embed, split, {file: [0.0, 1.0, 0.0]})
    with pytest.raises(ValueError, match="must be a single name|'\\.\\.' part"):
        doa_probe.load_split(embed, split)


def _seld_task(root, **changes) -> dict:
    """A SELD task folder without audio (find_tasks reads no audio): 2-s files, classes
    a and b, a frame of each split labelled; ``changes`` update the metadata."""
    task = root / "tasks" / "toy-seld"
    task.mkdir(parents=True)
    metadata = {
        "embedding_type": "event",
        "prediction_type": "seld",
        "label_format": "dcase_frames",
        "frame_seconds": 0.1,
        "sample_duration": 2.0,
        "split_mode": "trainvaltest",
        "splits": ["train", "valid", "test"],
        "evaluation": ["seld_score", "ER20", "F20", "LE_CD", "LR_CD"],
        "classes": ["a", "b"],
        **changes,
    }
    (task / "task_metadata.json").write_text(json.dumps(metadata))
    labels = {
        split: {f"{split}-0.wav": [seld_label(3)], f"{split}-1.wav": []}
        for split in ("train", "valid", "test")
    }
    for split, files in labels.items():
        (task / f"{split}.json").write_text(json.dumps(files))
    return labels


def test_find_tasks_routes_seld_tasks(tmp_path):
    _seld_task(tmp_path)
    (task,) = find_tasks(tmp_path / "tasks")
    assert task.seld and not task.localization and task.metric == "seld_score"
    assert task.describe()["higher_is_better"] is False


@pytest.mark.parametrize(
    "change, problem",
    [
        ({"embedding_type": "scene"}, "a SELD task needs embedding_type 'event'"),
        ({"evaluation": ["ER20", "seld_score"]}, "first evaluation metric must be 'seld_score'"),
        ({"sample_duration": 2.05}, "sample_duration of whole 100-ms frames, got 2.05"),
        ({"classes": []}, "needs 'classes'"),
    ],
)
def test_find_tasks_refuses_bad_seld_metadata(tmp_path, change, problem):
    _seld_task(tmp_path, **change)
    with pytest.raises(UsageError, match=problem):
        find_tasks(tmp_path / "tasks")


def test_find_tasks_lists_the_problems_of_seld_labels(tmp_path):
    labels = _seld_task(tmp_path)
    task = tmp_path / "tasks" / "toy-seld"
    labels["train"]["train-0.wav"].append(seld_label(20))  # 2-s files have frames 0-19
    labels["valid"]["../valid-0.wav"] = labels["valid"].pop("valid-0.wav")
    labels["test"]["test-0.wav"] = []
    for split, files in labels.items():
        (task / f"{split}.json").write_text(json.dumps(files))
    with pytest.raises(UsageError) as error:
        find_tasks(tmp_path / "tasks")
    message = str(error.value)
    assert "toy-seld: train.json['train-0.wav'][1]: frame 20, class 0 or source 0 out of" in message
    assert (
        "toy-seld: valid.json: file name '../valid-0.wav' has an empty, '.' or '..' part" in message
    )
    assert "toy-seld: test.json holds no SELD label" in message


def test_find_tasks_needs_a_chunk_record_of_every_seld_file(tmp_path):
    _seld_task(tmp_path)
    records = [
        {"split": s, "file": f"{s}-0.wav", "audio_seconds": 2.0} for s in ("train", "valid", "test")
    ]
    chunks = tmp_path / "tasks" / "toy-seld" / "chunks.jsonl"
    chunks.write_text("".join(json.dumps(r) + "\n" for r in records))
    with pytest.raises(UsageError, match="chunks.jsonl has no record of train/train-1.wav"):
        find_tasks(tmp_path / "tasks")
    chunks.write_text("not json\n")
    with pytest.raises(UsageError, match="chunks.jsonl line 1: not a chunk record"):
        find_tasks(tmp_path / "tasks")


def test_seld_scores_without_a_reference_event_fail_the_task_not_the_run(tmp_path):
    _seld_task(tmp_path)
    (task,) = find_tasks(tmp_path / "tasks")
    undefined = dict.fromkeys(["seld_score", "ER20", "F20", "LE_CD", "LR_CD"])
    scores = {
        "test": {**undefined, "files": 1},
        "folds": {"test": {**undefined, "files": ["test-1.wav"]}},
    }
    (tmp_path / "test.seld-scores.json").write_text(json.dumps({**scores, "file_counts": {}}))
    with pytest.raises(ScoreUnavailable, match="no reference event in the scored frames"):
        score_entry(task, tmp_path, seed=0)
