"""natheear-tasks seld-oracle: the oracle intensity-vector SELD baseline (direction and
activity from the FOA audio, classes from the reference)."""

import json

import numpy as np
import pytest
import soundfile as sf
import torch

from natheear_tasks.baselines.seld_oracle import (
    active_frames,
    frame_intensity,
    oracle_rows,
    predict,
)
from natheear_tasks.cli import main
from natheear_tasks.evaluation.seld_metrics import count_file, seld_scores
from natheear_tasks.evaluation.seld_score import score_folders
from natheear_tasks.formats.dcase_frames import (
    FrameRow,
    direction_xyz,
    format_frame_csv,
    read_frame_csv,
)
from natheear_tasks.simulation.recordings import Settings, write_dataset
from natheear_tasks.tasks.seld_dataset import read_dataset

RATE = 16000
FRAMES = 60
# (class, first frame, last frame + 1, azimuth, elevation); each event's edge frames lie in
# 1-s segments that hold the event, so edge smearing of the STFT costs nothing
EVENTS = [(0, 2, 18, 60.0, 20.0), (1, 32, 48, -120.0, -10.0)]


def _plane_wave_file(events=EVENTS, noise_db: float = -60.0, seed: int = 0) -> np.ndarray:
    """``(4, T)`` AmbiX: white-noise sources as plane waves over faint independent noise."""
    rng = np.random.default_rng(seed)
    audio = 10 ** (noise_db / 20) * 0.1 * rng.standard_normal((4, FRAMES * RATE // 10))
    for _, first, end, azimuth, elevation in events:
        x, y, z = direction_xyz(azimuth, elevation)
        signal = 0.1 * rng.standard_normal((end - first) * RATE // 10)
        span = slice(first * RATE // 10, end * RATE // 10)
        audio[:, span] += np.outer([1.0, y, z, x], signal)
    return audio


def _reference(events=EVENTS) -> list[FrameRow]:
    return [
        FrameRow(k, cls, 0, azimuth, elevation)
        for cls, first, end, azimuth, elevation in events
        for k in range(first, end)
    ]


def _oracle(audio: np.ndarray, reference: list[FrameRow]) -> list[FrameRow]:
    intensity, energy = frame_intensity(torch.from_numpy(audio), RATE, FRAMES)
    return oracle_rows(intensity, active_frames(energy), reference)


def test_anechoic_sources_are_found_where_and_as_labelled():
    reference = _reference()
    rows = _oracle(_plane_wave_file(), reference)
    by_frame = {r.frame: r for r in rows}
    for row in reference:
        found = by_frame[row.frame]
        assert found.cls == row.cls
        error = np.degrees(np.arccos(np.clip(found.direction @ row.direction, -1, 1)))
        assert error < 1.0, (row, found)
    labelled = {r.frame for r in reference}
    # the STFT window smears an onset or offset into the next frame at most
    assert {r.frame for r in rows} - labelled <= {1, 18, 31, 48}
    scores = seld_scores(count_file(reference, rows, num_classes=2, num_frames=FRAMES))
    assert scores.er20 == 0 and scores.f20 == 1 and scores.lr_cd == 1
    assert scores.le_cd < 1.0


def test_silence_gets_no_predictions_whatever_the_reference():
    reference = _reference()
    assert _oracle(np.zeros((4, FRAMES * RATE // 10)), reference) == []
    noise_only = _plane_wave_file(events=[], noise_db=-40.0)
    assert _oracle(noise_only, reference) == []


def test_overlapping_classes_share_the_one_direction():
    events = [(1, 10, 30, 0.0, 0.0), (3, 10, 30, 90.0, 0.0)]
    rows = _oracle(_plane_wave_file(events), _reference(events))
    frames = {r.frame for r in rows}
    assert frames >= set(range(10, 30))
    for k in range(10, 30):
        pair = [r for r in rows if r.frame == k]
        assert [r.cls for r in pair] == [1, 3]
        assert pair[0].direction == pytest.approx(pair[1].direction)
        # two equal-power plane waves: one direction between them
        assert 20 < pair[0].azimuth < 70


def test_activity_without_a_reference_class_takes_the_nearest_labelled_frame():
    intensity = torch.zeros(12, 3)
    intensity[:, 0] = 1.0
    active = torch.zeros(12, dtype=torch.bool)
    active[[0, 3, 5, 9, 11]] = True
    reference = [FrameRow(3, 2, 0, 0.0, 0.0), FrameRow(7, 4, 0, 0.0, 0.0)]
    rows = oracle_rows(intensity, active, reference)
    # frame 0 and 3: class 2 (frame 3); 5: equally near 3 and 7, the earlier; 9, 11: class 4
    assert [(r.frame, r.cls) for r in rows] == [(0, 2), (3, 2), (5, 2), (9, 4), (11, 4)]
    assert oracle_rows(intensity, active, []) == []


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    """2 simulated frame-list recordings of 4 s at 16 kHz, also written as FuMa."""
    root = tmp_path_factory.mktemp("oracle")
    settings = Settings("frames", files=2, seconds=4.0, sample_rate=RATE, folds=2, seed=5)
    acn = write_dataset(root / "acn", settings)
    fuma = write_dataset(root / "fuma", Settings(**{**settings.__dict__, "channel_order": "fuma"}))
    return acn, fuma


def test_fuma_input_read_as_fuma_gives_the_same_rows(toy):
    acn, fuma = toy
    for ours, theirs in zip(
        read_dataset(acn, "frames").recordings,
        read_dataset(fuma, "frames").recordings,
        strict=True,
    ):
        rows, _ = predict(ours, "acn")
        assert rows
        fuma_rows, _ = predict(theirs, "fuma")
        assert [(r.frame, r.cls) for r in fuma_rows] == [(r.frame, r.cls) for r in rows]
        for a, b in zip(rows, fuma_rows, strict=True):
            assert a.direction @ b.direction > np.cos(np.radians(1.0))


def test_the_command_writes_what_seld_score_scores(toy, tmp_path, capsys):
    acn, _ = toy
    out = tmp_path / "oracle"
    assert main(["seld-oracle", str(acn), str(out), "--layout", "frames"]) == 0
    assert "natheear-tasks seld-score --ref" in capsys.readouterr().out
    dataset = read_dataset(acn, "frames")
    record = json.loads((out / "oracle.json").read_text())
    assert record["layout"] == "frames" and record["channel_order"] == "acn"
    for recording in dataset.recordings:
        reference = read_frame_csv(out / "reference" / f"{recording.stem}.csv")
        assert [(r.frame, r.cls, r.source) for r in reference] == [
            (r.frame, r.cls, r.source) for r in recording.rows
        ]
        predicted = (out / "prediction" / f"{recording.stem}.csv").read_text()
        rows, active = predict(recording)
        assert predicted == format_frame_csv(rows)
        assert record["files"][recording.identity]["active_frames"] == active
    report = score_folders(out / "reference", out / "prediction", len(dataset.classes))
    assert 0 < report.scores.seld < 1
    assert report.scores.le_cd < 60


def test_bad_input_is_refused_and_nothing_is_written(toy, tmp_path, capsys):
    acn, _ = toy
    out = tmp_path / "oracle"
    assert main(["seld-oracle", str(acn), str(out), "--layout", "events"]) == 2
    assert "problem" in capsys.readouterr().err
    assert not out.exists() and list(tmp_path.iterdir()) == []
    out.mkdir()
    code = main(["seld-oracle", str(acn), str(out), "--layout", "frames", "--margin-db", "-1"])
    err = capsys.readouterr().err
    assert code == 2 and "exists" in err and "--margin-db" in err
    assert list(out.iterdir()) == []


def test_the_command_has_help(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["seld-oracle", "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "usage: natheear-tasks seld-oracle" in out and "--margin-db" in out


def test_a_published_task_folder_is_localized_with_its_direction_convention(tmp_path, capsys):
    """--layout task: an accdoa task folder (events with direction [azimuth, elevation] in
    degrees, static sources, 20 label frames a second, files of any length) whose FOA is
    exactly encoded plane waves: the per-class LE_CD is a few degrees (a mirrored or
    swapped convention would be tens of degrees off)."""
    task = tmp_path / "published-seld"
    per_second = 20  # 50-ms label frames
    labels = {}
    for split, seed in (("train", 1), ("test", 2)):
        (task / str(RATE) / split).mkdir(parents=True)
        labels[split] = {}
        for index, shift in enumerate((0.0, 95.0)):
            events = [(c, f, e, a + shift, el) for c, f, e, a, el in EVENTS]
            audio = _plane_wave_file(events, seed=seed + index)
            name = f"{split}{index}.wav"
            sf.write(task / str(RATE) / split / name, audio.T, RATE, subtype="FLOAT")
            labels[split][name] = [
                {"label": "ab"[c], "start": 100.0 * f, "end": 100.0 * e,
                 "direction": [(a + 180) % 360 - 180, el]}
                for c, f, e, a, el in events
            ]  # fmt: skip
    metadata = {
        "task_name": "published-seld", "embedding_type": "event", "prediction_type": "accdoa",
        "split_mode": "trainvaltest", "splits": ["train", "test"], "sample_duration": None,
        "evaluation": ["SELD"], "scoring_params": {"doa_threshold": 20, "average": "macro"},
        "source_dynamics": "static", "_nb_label_frames_1s": per_second,
    }  # fmt: skip
    (task / "task_metadata.json").write_text(json.dumps(metadata))
    (task / "labelvocabulary.csv").write_text("idx,label\n0,a\n1,b\n")
    for split, files in labels.items():
        (task / f"{split}.json").write_text(json.dumps(files))
    out = tmp_path / "oracle"
    assert main(["seld-oracle", str(task), str(out), "--layout", "task"]) == 0
    assert f"--label-frames-1s {per_second}" in capsys.readouterr().out
    assert sorted(p.name for p in (out / "prediction").iterdir()) == [
        "test__test0.csv", "test__test1.csv", "train__train0.csv", "train__train1.csv"
    ]  # fmt: skip
    report = score_folders(out / "reference", out / "prediction", 2, frames_per_segment=per_second)
    assert report.scores.class_le_cd.max() < 5.0, report.scores.class_le_cd
    assert report.scores.f20 > 0.9
    record = json.loads((out / "oracle.json").read_text())
    assert record["layout"] == "task" and record["label_frames_1s"] == per_second


def test_a_task_wav_that_cannot_be_read_is_named(tmp_path, capsys):
    task = tmp_path / "published-seld"
    (task / str(RATE) / "test").mkdir(parents=True)
    (task / str(RATE) / "test" / "x.wav").write_bytes(b"not a wav")
    metadata = {
        "task_name": "published-seld", "embedding_type": "event", "prediction_type": "accdoa",
        "split_mode": "trainvaltest", "splits": ["test"], "sample_duration": 1.0,
        "evaluation": ["SELD"],
    }  # fmt: skip
    (task / "task_metadata.json").write_text(json.dumps(metadata))
    (task / "labelvocabulary.csv").write_text("idx,label\n0,a\n")
    event = {"label": "a", "start": 0.0, "end": 500.0, "direction": [30.0, 0.0]}
    (task / "test.json").write_text(json.dumps({"x.wav": [event]}))
    out = tmp_path / "oracle"
    assert main(["seld-oracle", str(task), str(out), "--layout", "task"]) == 2
    assert "x.wav cannot be read" in capsys.readouterr().err
    assert not out.exists()
