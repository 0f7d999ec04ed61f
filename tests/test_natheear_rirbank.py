"""natheear_tasks.simulation.rirbank: writing, resuming and reading RIR banks (ours, GRAM
releases)."""

import json

import numpy as np
import pytest

from natheear_tasks.simulation.rirbank import (
    RirBank,
    RirBankError,
    RirBankWriter,
    collate_scenes,
    direction_vector,
)


def _record(i: int) -> dict:
    return {
        "source": {"azimuth": 10.0 * i, "elevation": -5.0, "distance": 2.0, "position": [1, 2, 3]},
        "listener": {"position": [2.0, 2.0, 1.5], "yaw": 30.0},
        "room": {"size": [5.0, 4.0, 3.0], "rt60": 0.4},
        "noise": {"kind": "diffuse", "sources": [{"azimuth": 1.0, "elevation": 2.0}] * 3},
    }


def _writer(path, count=3, seed=0):
    return RirBankWriter(path, "binaural", 16000, count, {"seed": seed, "ranges": (1, 2)})


def test_bank_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    arrays = [rng.standard_normal((4, 2, 100 + 10 * i)) for i in range(3)]
    writer = _writer(tmp_path / "bank")
    writer.start()
    for i, a in enumerate(arrays):
        writer.write_scene(i, a, _record(i))
    bank = writer.finalize()
    assert not (tmp_path / "bank" / "build.json").exists()
    assert sorted(p.name for p in (tmp_path / "bank" / "rirs").iterdir()) == [
        "000000.npy",
        "000001.npy",
        "000002.npy",
    ]
    bank = RirBank.open(tmp_path / "bank")
    assert (bank.sample_rate, bank.num_channels, bank.format, len(bank)) == (
        16000,
        2,
        "binaural",
        3,
    )
    scene = bank[2]
    assert scene.rirs.dtype == np.float32 and scene.rirs.shape == (4, 2, 120)
    np.testing.assert_allclose(scene.rirs, arrays[2].astype(np.float32))
    assert scene.num_noise == 3 and scene.noise_kind == "diffuse"
    assert scene.source_azimuth == 20.0 and scene.room_size == (5.0, 4.0, 3.0)
    assert scene.listener_yaw == 30.0 and scene.noise_directions == [(1.0, 2.0)] * 3
    np.testing.assert_allclose(scene.source_direction, direction_vector(20.0, -5.0))
    assert bank.records[1]["length"] == 110 and bank.records[1]["num_noise"] == 3
    with pytest.raises(IndexError):
        bank[3]


def test_direction_vector_axes():
    np.testing.assert_allclose(direction_vector(0, 0), [1, 0, 0], atol=1e-12)
    np.testing.assert_allclose(direction_vector(90, 0), [0, 1, 0], atol=1e-12)
    np.testing.assert_allclose(direction_vector(-90, 0), [0, -1, 0], atol=1e-12)
    np.testing.assert_allclose(direction_vector(123, 90), [0, 0, 1], atol=1e-12)


def test_unfinished_bank_resumes_and_refuses_other_options(tmp_path):
    path = tmp_path / "bank"
    writer = _writer(path)
    writer.start()
    writer.write_scene(0, np.zeros((2, 2, 10)), _record(0))
    with pytest.raises(RirBankError, match="unfinished"):
        RirBank.open(path)
    with pytest.raises(RirBankError, match="not written"):
        writer.finalize()
    with pytest.raises(RirBankError, match="other options"):
        _writer(path, seed=1).start()
    again = _writer(path)
    again.start()  # same options: resume
    assert again.has_scene(0) and not again.has_scene(1)
    for i in (1, 2):
        again.write_scene(i, np.zeros((2, 2, 10)), _record(i))
    assert len(again.finalize()) == 3
    assert _writer(path).is_complete()
    with pytest.raises(RirBankError, match="different RIR bank"):
        _writer(path, count=4).is_complete()


def test_writer_refuses_wrong_shapes_and_foreign_folders(tmp_path):
    writer = _writer(tmp_path / "bank")
    writer.start()
    with pytest.raises(RirBankError, match="expected"):
        writer.write_scene(0, np.zeros((2, 4, 10)), _record(0))
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "x.txt").write_text("x")
    with pytest.raises(RirBankError, match="not an RIR bank"):
        _writer(tmp_path / "other").start()
    with pytest.raises(RirBankError, match="neither"):
        RirBank.open(tmp_path / "other")


def test_gram_release_folder(tmp_path):
    root = tmp_path / "gram"
    (root / "part1").mkdir(parents=True)
    rng = np.random.default_rng(1)
    a = rng.standard_normal((6, 4, 50))
    b = rng.standard_normal((2, 4, 70)).astype(np.float64)
    np.save(root / "part1" / "a.npy", a)
    np.save(root / "b.npy", b)
    (root / "part1" / "a.json").write_text(json.dumps({"azimuth": -45.0, "elevation": 10.0}))
    (root / "metadata.jsonl").write_text(
        json.dumps({"file": "b.npy", "source_azimuth": 90, "source_elevation": 0, "rt60": 0.7})
        + "\n"
    )
    bank = RirBank.open(root)
    assert (bank.format, bank.num_channels, bank.sample_rate, len(bank)) == (
        "ambisonics",
        4,
        32000,
        2,
    )
    first, second = bank[0], bank[1]  # sorted by path: b.npy, part1/a.npy
    assert first.rirs.shape == (2, 4, 70) and first.rirs.dtype == np.float32
    assert (first.source_azimuth, first.rt60, first.num_noise) == (90.0, 0.7, 1)
    np.testing.assert_allclose(second.rirs, a.astype(np.float32))
    np.testing.assert_allclose(second.source_direction, direction_vector(-45, 10))
    assert RirBank.open(root, sample_rate=48000).sample_rate == 48000
    np.save(root / "bad.npy", np.zeros((3, 10)))
    with pytest.raises(RirBankError, match="shape"):
        RirBank.open(root)


def test_gram_release_without_metadata_has_no_direction(tmp_path):
    np.save(tmp_path / "x.npy", np.ones((3, 2, 8)))
    scene = RirBank.open(tmp_path)[0]
    assert scene.source_direction is None and scene.num_noise == 2


def test_collate_scenes_pads_rows_and_lengths(tmp_path):
    writer = _writer(tmp_path / "bank")
    writer.start()
    writer.write_scene(0, np.ones((2, 2, 30)), _record(0))
    writer.write_scene(1, 2 * np.ones((5, 2, 50)), _record(1))
    writer.write_scene(2, 3 * np.ones((4, 2, 10)), _record(2))
    bank = writer.finalize()
    source, noise, mask = collate_scenes([bank[0], bank[1], bank[2]], max_noise=5)
    assert source.shape == (3, 2, 50) and noise.shape == (3, 5, 2, 50)
    assert mask.tolist() == [[1, 0, 0, 0, 0], [1, 1, 1, 1, 0], [1, 1, 1, 0, 0]]
    assert source[0, :, 30:].sum() == 0 and source[0, :, :30].min() == 1
    assert noise[1, 3].min() == 2 and noise[1, 4].max() == 0
    cut, _, _ = collate_scenes([bank[1]], max_noise=4, length=20)
    assert cut.shape == (1, 2, 20)
    with pytest.raises(RirBankError, match="more than"):
        collate_scenes([bank[1]], max_noise=3)
