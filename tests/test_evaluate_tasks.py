"""``evaluate``'s task folders: what :func:`~natheear_tasks.evaluation.discovery.find_tasks`
accepts (SELD tasks checked before any embedding), that names read from a task folder
cannot lead outside it, and SELD scores read back from the probe's output."""

import json

import numpy as np
import pytest
from seld_task_files import seld_label, write_seld_task

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
    labels = {
        split: {f"{split}-0.wav": [seld_label(3)], f"{split}-1.wav": []}
        for split in ("train", "valid", "test")
    }
    write_seld_task(root / "tasks" / "toy-seld", labels, **changes)
    return labels


def test_find_tasks_routes_seld_tasks(tmp_path):
    _seld_task(tmp_path)
    (task,) = find_tasks(tmp_path / "tasks")
    assert task.seld and not task.localization and task.metric == "seld_score"
    assert task.describe()["higher_is_better"] is False


@pytest.mark.parametrize(
    "change, problem",
    [
        ({"embedding_type": "scene"}, "embedding_type must be 'event' for an accdoa task"),
        ({"evaluation": ["ER20", "SELD"]}, "first evaluation metric must be 'seld_score'"),
        (
            {"scoring_params": {"doa_threshold": 20, "azimuth_limits": [-180, 180]}},
            r"scoring_params keys \['azimuth_limits'\] are not understood",
        ),
        ({"_nb_label_frames_1s": 0}, "_nb_label_frames_1s 0: not a whole number"),
        ({"source_dynamics": "moving"}, "source_dynamics 'moving': not one of"),
        (
            {"prediction_type": "multi-event-accdoa"},
            "prediction_type 'multi-event-accdoa': not one",
        ),
        ({"prediction_type": "seld"}, "rewrite it with `natheear-tasks seld"),
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
    labels["train"]["train-1.wav"] = [{**seld_label(2), "direction": [0, 100]}]
    labels["test"]["test-0.wav"] = [
        {**seld_label(2), "azimuth": 3},
        {**seld_label(2), "label": "c"},
    ]
    for split, files in labels.items():
        (task / f"{split}.json").write_text(json.dumps(files))
    with pytest.raises(UsageError) as error:
        find_tasks(tmp_path / "tasks")
    message = str(error.value)
    assert (
        "toy-seld: train.json['train-0.wav'][1]: starts at 2000 ms, after the file's 20" in message
    )
    assert "toy-seld: train.json['train-1.wav'][0]: localization label [0, 100]" in message
    assert "test.json['test-0.wav'][0]: keys ['azimuth'] are not understood" in message
    assert "test.json['test-0.wav'][1]: label 'c' is not in labelvocabulary.csv" in message
    labels["valid"]["../valid-0.wav"] = labels["valid"].pop("valid-0.wav")
    (task / "valid.json").write_text(json.dumps(labels["valid"]))
    with pytest.raises(UsageError, match="file name '../valid-0.wav' has an empty, '.' or '..'"):
        find_tasks(tmp_path / "tasks")


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
