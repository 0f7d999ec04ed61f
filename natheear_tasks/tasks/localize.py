"""Localization tasks: a scene task whose label is the source direction, in the published
format (:mod:`natheear_tasks.formats.published`; the GRAM authors' kit reads it with
``--localization cartesian-regression``).

Each file's label is ``[x, y, z]``, the unit vector from the listener (microphone) to the
source in the listener's frame: x forward, y left, z up (azimuth counter-clockwise from the
front, elevation up). ``scenes.jsonl`` beside the task records azimuth and elevation in
degrees (``scene.source.azimuth``, ``scene.source.elevation``) and the distance. The
metadata says ``"prediction_type": "cartesian-regression"`` and ``"evaluation": ["MAE",
"DOE"]`` (the kit's names of the mean and median DoA error; heareval's embeddings runner
stores such labels as they are), and ``labelvocabulary.csv`` names the three components.
"""

from __future__ import annotations

from natheear_tasks.formats import published
from natheear_tasks.simulation.rirbank import direction_vector
from natheear_tasks.tasks.taskdir import Task

PREDICTION_TYPE = published.LOCALIZATION_TYPES[0]
EVALUATION = published.LOCALIZATION_EVALUATION
VOCABULARY = "idx,label\n0,x\n1,y\n2,z\n"
LABEL_FORMAT = "unit_vector_xyz"


def direction_label(scene_record: dict) -> list[float]:
    """``[x, y, z]`` (6 decimals) of a bank scene record's source."""
    source = scene_record["source"]
    vector = direction_vector(source["azimuth"], source["elevation"])
    return [round(float(v), 6) for v in vector]


def task_files(
    metadata: dict, task: Task, records: list[dict]
) -> tuple[dict, str, dict[str, dict]]:
    """Metadata, vocabulary text and split label files of the localization task.

    Args:
        metadata: the converted task's metadata (task name and ``natheear`` set).
        task: the source task (its splits are kept).
        records: one file record per file (``split``, ``file``, ``scene``).
    """
    metadata = dict(metadata)
    metadata.update(
        embedding_type="scene",
        prediction_type=PREDICTION_TYPE,
        evaluation=EVALUATION,
        label_format=LABEL_FORMAT,
        source_prediction_type=task.metadata["prediction_type"],
    )
    metadata.pop("evaluation_params", None)
    splits: dict[str, dict] = {split: {} for split in task.splits}
    for record in records:
        splits[record["split"]][record["file"]] = direction_label(record["scene"])
    return metadata, VOCABULARY, splits
