"""``evaluate``'s task discovery (:func:`natheear_tasks.evaluation.evaluate.find_tasks`):
what it accepts, and that names read from a task folder cannot lead outside it."""

import json

import numpy as np
import pytest

from natheear_tasks.evaluation import doa_probe
from natheear_tasks.evaluation.evaluate import UsageError, find_tasks


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
