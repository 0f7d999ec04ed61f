"""The localization probe: DoA error, labels, splits, heareval's grids, and direction
recovery from oracle features (intensity vectors of first-order Ambisonics audio)."""

import math

import pytest
import torch

from hear_gram import features as feat
from natheear_tasks.evaluation import determinism, doa_probe
from natheear_tasks.evaluation.doa_probe import Split, doa_error_deg
from natheear_tasks.formats import published


def test_doa_error_hand_worked():
    prediction = torch.tensor([[0.0, 2.0, 0.0], [-1.0, 0.0, 0.0], [3.0, 0.0, 0.0], [1.0, 1.0, 0.0]])
    target = torch.tensor([[1.0, 0.0, 0.0]]).expand(4, -1)
    assert doa_error_deg(prediction, target).tolist() == pytest.approx([90.0, 180.0, 0.0, 45.0])


def test_direction_labels_cartesian_or_polar():
    assert published.direction_of([0.0, 3.0, 4.0]) == pytest.approx([0.0, 0.6, 0.8])
    assert published.direction_of([[1, 0, 0]]) == [1.0, 0.0, 0.0]
    # [azimuth, elevation] in degrees (the kit's polar labels): 90 degrees left, 30 up
    assert published.direction_of([90.0, 30.0]) == pytest.approx([0.0, 0.866025, 0.5], abs=1e-6)
    for bad in ([30.0, 100.0], [0, 0, 0], ["x", "y", "z"], {"x": 1}, [1, 2, float("nan")]):
        with pytest.raises(ValueError):
            published.direction_of(bad)


def test_kfold_splits_follow_heareval():
    plan = doa_probe.data_splits({"split_mode": "new_split_kfold", "splits": ["f2", "f0", "f1"]})
    assert plan == [
        {"train": ["f2"], "valid": ["f1"], "test": ["f0"]},
        {"train": ["f0"], "valid": ["f2"], "test": ["f1"]},
        {"train": ["f1"], "valid": ["f0"], "test": ["f2"]},
    ]
    assert doa_probe.data_splits({"split_mode": "trainvaltest"}) == [
        {"train": ["train"], "valid": ["valid"], "test": ["test"]}
    ]


def test_grid_confs_are_a_seeded_choice_of_the_grid():
    confs = doa_probe.grid_confs("default", 8)
    assert len(confs) == 8 == len({tuple(sorted(map(str, c.items()))) for c in confs})
    assert confs == doa_probe.grid_confs("default", 8)
    assert all(c["lr"] in doa_probe.GRIDS["default"]["lr"] for c in confs)
    assert len(doa_probe.grid_confs("default", 100)) == 16  # the whole grid
    with pytest.raises(ValueError, match="unknown grid"):
        doa_probe.grid_confs("huge", 1)


@pytest.mark.slow
def test_grids_equal_heareval():
    from heareval.predictions import task_predictions as tp

    assert doa_probe.GRIDS["default"] == tp.PARAM_GRID
    assert doa_probe.GRIDS["fast"] == tp.FAST_PARAM_GRID
    assert doa_probe.GRIDS["faster"] == tp.FASTER_PARAM_GRID


def _foa_split(name: str, count: int, seed: int) -> Split:
    """Noise sources encoded at uniformly random directions in first-order Ambisonics
    (AmbiX: W, Y, Z, X; SN3D) with diffuse noise 10 dB down; features: the time average of
    the three mel-band intensity-vector channels (oracle features for direction)."""
    g = torch.Generator().manual_seed(seed)
    azimuth = torch.rand(count, generator=g) * 2 * math.pi
    elevation = torch.asin(torch.rand(count, generator=g) * 2 - 1)
    direction = torch.stack(
        [
            torch.cos(azimuth) * torch.cos(elevation),
            torch.sin(azimuth) * torch.cos(elevation),
            torch.sin(elevation),
        ],
        dim=-1,
    )
    gains = torch.stack([torch.ones(count), direction[:, 1], direction[:, 2], direction[:, 0]], -1)
    source = torch.randn(count, 1, 8000, generator=g)
    audio = source * gains[..., None] + 0.3 * torch.randn(count, 4, 8000, generator=g)
    intensity = feat.compute_features(audio, "ambisonics")[:, 4:]
    return Split([f"{name}{i}" for i in range(count)], intensity.mean(-1).flatten(1), direction)


def test_probe_recovers_directions_from_oracle_features(monkeypatch):
    # heareval's grid narrowed to its best learning rate and two layers, for speed.
    grid = {**doa_probe.GRIDS["default"], "hidden_dim": [256], "hidden_layers": [2], "lr": [3.2e-3]}
    monkeypatch.setitem(doa_probe.GRIDS, "test", grid)
    splits = {"train": _foa_split("a", 300, 0), "valid": _foa_split("b", 80, 1)}
    splits["test"] = _foa_split("c", 80, 2)
    metadata = {"split_mode": "trainvaltest", "evaluation": ["mean_doa_error_deg"]}
    scores = doa_probe.fit_and_score(splits, metadata, grid="test", grid_points=2)
    assert scores["test"]["mean_doa_error_deg"] < 8.0
    assert scores["test"]["median_doa_error_deg"] < 6.0
    assert scores["test"]["files"] == 80
    assert sorted(scores["errors_deg"]) == sorted(splits["test"].names)
    assert max(scores["errors_deg"].values()) < 60.0
    assert scores["hparams"]["hidden_dim"] == 256


def test_probe_scores_are_thread_count_independent(monkeypatch):
    grid = {**doa_probe.GRIDS["default"], "hidden_dim": [256], "hidden_layers": [1], "lr": [1e-3]}
    grid.update(max_epochs=[30], check_val_every_n_epoch=[3], patience=[3])
    monkeypatch.setitem(doa_probe.GRIDS, "test", grid)
    splits = {"train": _foa_split("a", 300, 0), "valid": _foa_split("b", 60, 1)}
    splits["test"] = _foa_split("c", 60, 2)
    metadata = {"split_mode": "trainvaltest", "evaluation": ["mean_doa_error_deg"]}
    scores = []
    for count in (1, 2):
        with determinism.intra_op_threads(count):
            scores.append(doa_probe.fit_and_score(splits, metadata, "test", 1, task="t"))
    assert scores[0]["errors_deg"] == scores[1]["errors_deg"]
    assert scores[0]["folds"]["test"]["files"] == splits["test"].names
    other_model = doa_probe.fit_and_score(splits, metadata, "test", 1, task="t", model="m")
    assert other_model["errors_deg"] != scores[0]["errors_deg"]  # its own seed
