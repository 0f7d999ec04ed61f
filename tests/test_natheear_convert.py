"""natheear-tasks convert / localize: what is kept, determinism, shards, resume, bad input."""

import io
import json
import math
import os
import shutil
import stat
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from source_tasks import write_task

from natheear_tasks.cli import main
from natheear_tasks.demo import synth
from natheear_tasks.formats.wav import wav_bytes
from natheear_tasks.simulation.mix import fft_convolve
from natheear_tasks.simulation.noise import resample
from natheear_tasks.simulation.rirbank import RirBank, RirBankError, RirBankWriter, direction_vector
from natheear_tasks.simulation.rirs import SimulationSettings, build_bank
from natheear_tasks.tasks import convert as convert_module
from natheear_tasks.tasks import taskdir
from natheear_tasks.tasks.journal import Journal, read_journal
from natheear_tasks.tasks.taskdir import atomic_write_json

FAST = SimulationSettings(n_rays=3000, max_seconds=0.5)


@pytest.fixture(scope="session")
def banks(tmp_path_factory) -> dict[str, Path]:
    """Tiny RIR banks at 48 kHz (3 scenes each)."""
    from natheear_tasks.simulation.hrtf import load_kemar

    root = tmp_path_factory.mktemp("banks")
    return {
        "binaural": build_bank(root / "b", "binaural", 48000, 3, 5, load_kemar(), FAST).path,
        "ambisonics": build_bank(root / "a", "ambisonics", 48000, 3, 5, None, FAST).path,
    }


@pytest.fixture(scope="session")
def scene_task(tmp_path_factory) -> Path:
    return write_task(tmp_path_factory.mktemp("src"), files_per_split=2)


def _files(folder: Path) -> dict[str, bytes]:
    return {
        p.relative_to(folder).as_posix(): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def _convert(src, out, fmt, bank, *extra, command="convert") -> int:
    return main([command, str(src), str(out), "--format", fmt, "--rirs", str(bank), *extra])


@pytest.fixture(scope="session")
def reference(tmp_path_factory, scene_task, banks) -> Path:
    """The binaural conversion of the scene task, one worker, seed 3."""
    out = tmp_path_factory.mktemp("reference")
    assert _convert(scene_task, out, "binaural", banks["binaural"], "--seed", "3") == 0
    return out / "toy-scene-binaural"


def test_conversion_keeps_everything_a_task_has(scene_task, reference):
    assert sorted(p.name for p in reference.parent.iterdir()) == ["toy-scene-binaural"]
    src_meta = json.loads((scene_task / "task_metadata.json").read_text())
    meta = json.loads((reference / "task_metadata.json").read_text())
    assert meta["task_name"] == "toy-scene-binaural"
    assert {k: v for k, v in meta.items() if k not in ("task_name", "natheear")} == {
        k: v for k, v in src_meta.items() if k != "task_name"
    }
    assert meta["natheear"]["format"] == "binaural" and meta["natheear"]["seed"] == 3
    assert meta["natheear"]["channels"] == ["left", "right"]
    assert meta["natheear"]["noise"]["kind"] == "synthesized"
    for name in ("labelvocabulary.csv", "train.json", "valid.json", "test.json"):
        assert (reference / name).read_bytes() == (scene_task / name).read_bytes()
    wavs = sorted(p.relative_to(scene_task) for p in scene_task.rglob("*.wav"))
    assert wavs == sorted(p.relative_to(reference) for p in reference.rglob("*.wav"))
    for rel in wavs:
        before, after = sf.info(str(scene_task / rel)), sf.info(str(reference / rel))
        assert (after.channels, after.frames, after.samplerate, after.subtype) == (
            2,
            before.frames,
            before.samplerate,
            before.subtype,
        )
    records = [json.loads(line) for line in (reference / "scenes.jsonl").read_text().splitlines()]
    assert len(records) == 6 and {r["split"] for r in records} == {"train", "valid", "test"}
    for r in records:
        assert 5 <= r["snr_db"] <= 40 and r["noise"]["kind"] == "synthesized"
        assert {"room", "listener", "source", "noise"} <= set(r["scene"])
    assert not list(reference.rglob("*.tmp")) and not (reference / ".journal").exists()


def _assert_scenes_at_their_snr(source: Path, task: Path, bank: Path, rates) -> None:
    bank = RirBank.open(bank)
    for line in (task / "scenes.jsonl").read_text().splitlines():
        record = json.loads(line)
        for rate in rates:
            rel = f"{rate}/{record['split']}/{record['file']}"
            dry, _ = sf.read(str(source / rel), dtype="float32")
            out, _ = sf.read(str(task / rel), dtype="float64")
            rir = resample(bank[record["bank_scene"]].rirs[0], 48000, rate)
            wet = fft_convolve(torch.from_numpy(dry), torch.from_numpy(rir)).double().numpy()
            mixture = out.T / 10 ** (record["gain_db"][str(rate)] / 20)
            noise = mixture - wet
            snr = 10 * math.log10(np.sum(wet**2) / np.sum(noise**2))
            assert abs(snr - record["snr_db"]) < 0.5, (rel, snr, record["snr_db"])
            # level matched to the dry clip unless limited by the peak
            rms_ratio = np.sqrt(np.mean(out**2) / np.mean(dry.astype(float) ** 2))
            assert rms_ratio < 1.01 and (rms_ratio > 0.99 or np.abs(out).max() > 0.98)


def test_written_files_hold_the_scene_at_its_snr(scene_task, reference, banks):
    _assert_scenes_at_their_snr(scene_task, reference, banks["binaural"], (16000, 48000))


def test_files_of_many_lengths_in_one_scene(tmp_path, banks):
    src = write_task(tmp_path / "src", "toy-lengths", files_per_split=4, rates=(16000, 48000))
    metadata = json.loads((src / "task_metadata.json").read_text())
    metadata["sample_duration"] = None
    (src / "task_metadata.json").write_text(json.dumps(metadata))
    rng = np.random.default_rng(1)
    for n, wav in enumerate(sorted(src.glob("16000/*/*.wav"))):
        seconds = 0.5 + 0.25 * (n % 4)
        for rate in (16000, 48000):
            clip = 0.3 * rng.standard_normal(int(seconds * rate)).astype(np.float32)
            sf.write(src / str(rate) / wav.parent.name / wav.name, clip, rate, subtype="PCM_16")
    out = tmp_path / "out"
    assert _convert(src, out, "ambisonics", banks["ambisonics"]) == 0
    task = out / "toy-lengths-ambisonics"
    records = [json.loads(line) for line in (task / "scenes.jsonl").read_text().splitlines()]
    lengths = {}  # of the files of each bank scene
    for r in records:
        frames = sf.info(str(src / "16000" / r["split"] / r["file"])).frames
        lengths.setdefault(r["bank_scene"], set()).add(frames)
    assert max(len(v) for v in lengths.values()) >= 2
    _assert_scenes_at_their_snr(src, task, banks["ambisonics"], (16000, 48000))


def test_same_seed_same_bytes_whatever_the_workers(tmp_path, scene_task, reference, banks):
    out = tmp_path / "two-workers"
    assert (
        _convert(scene_task, out, "binaural", banks["binaural"], "--seed", "3", "--workers", "2")
        == 0
    )
    assert _files(out / "toy-scene-binaural") == _files(reference)
    other = tmp_path / "other-seed"
    assert _convert(scene_task, other, "binaural", banks["binaural"], "--seed", "4") == 0
    differ = [
        k for k, v in _files(other / "toy-scene-binaural").items() if _files(reference)[k] != v
    ]
    assert any(k.endswith(".wav") for k in differ)


def test_shards_union_equals_a_single_run(tmp_path, scene_task, reference, banks):
    out = tmp_path / "sharded"
    shard = ["--seed", "3", "--num-shards", "2", "--shard-index"]
    assert _convert(scene_task, out, "binaural", banks["binaural"], *shard, "1") == 0
    assert not (out / "toy-scene-binaural").exists()  # not complete yet
    assert len(list((out / "toy-scene-binaural.partial").rglob("*.wav"))) == 6  # 3 files, 2 rates
    assert _convert(scene_task, out, "binaural", banks["binaural"], *shard, "0") == 0
    assert sorted(p.name for p in out.iterdir()) == ["toy-scene-binaural"]
    assert _files(out / "toy-scene-binaural") == _files(reference)


_MIX_FILE = convert_module._mix_file


def _interrupt_on_the_third_file(monkeypatch) -> None:
    """Make the converter stop (as on Ctrl-C) while it mixes the third file."""
    calls = []

    def dies_on_the_third_file(*args):
        calls.append(args)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return _MIX_FILE(*args)

    monkeypatch.setattr(convert_module, "_mix_file", dies_on_the_third_file)


def test_killed_run_resumes_to_the_same_result(tmp_path, scene_task, reference, banks, monkeypatch):
    out = tmp_path / "killed"
    _interrupt_on_the_third_file(monkeypatch)
    assert _convert(scene_task, out, "binaural", banks["binaural"], "--seed", "3") == 130
    partial = out / "toy-scene-binaural.partial"
    assert not (out / "toy-scene-binaural").exists()
    assert len(read_journal(partial)) == 2
    assert not list(partial.rglob("*.tmp"))
    monkeypatch.setattr(convert_module, "_mix_file", _MIX_FILE)
    assert _convert(scene_task, out, "binaural", banks["binaural"], "--seed", "3") == 0
    assert _files(out / "toy-scene-binaural") == _files(reference)


def test_a_torn_journal_line_is_ignored_and_its_file_redone(
    tmp_path, scene_task, reference, banks, monkeypatch, capsys
):
    out = tmp_path / "torn"
    _interrupt_on_the_third_file(monkeypatch)
    assert _convert(scene_task, out, "binaural", banks["binaural"], "--seed", "3") == 130
    monkeypatch.setattr(convert_module, "_mix_file", _MIX_FILE)
    partial = out / "toy-scene-binaural.partial"
    (journal,) = [p for p in (partial / ".journal").iterdir() if p.stat().st_size]
    lines = journal.read_bytes().splitlines(keepends=True)
    assert len(lines) == 2
    journal.write_bytes(lines[0] + lines[1][: len(lines[1]) // 2])  # killed mid-line
    capsys.readouterr()
    assert _convert(scene_task, out, "binaural", banks["binaural"], "--seed", "3") == 0
    assert "converted 5 files" in capsys.readouterr().out  # the torn one again
    assert _files(out / "toy-scene-binaural") == _files(reference)


def test_a_file_is_done_only_once_its_journal_line_is_written(
    tmp_path, scene_task, reference, banks, monkeypatch
):
    out = tmp_path / "killed-between"
    real = Journal.append
    calls = []

    def dies_before_the_third_line(self, record):
        calls.append(record)
        if len(calls) == 3:
            raise KeyboardInterrupt  # the file's wavs are written, its line is not
        real(self, record)

    monkeypatch.setattr(Journal, "append", dies_before_the_third_line)
    assert _convert(scene_task, out, "binaural", banks["binaural"], "--seed", "3") == 130
    monkeypatch.setattr(Journal, "append", real)
    partial = out / "toy-scene-binaural.partial"
    lost = calls[2]
    done = {(r["split"], r["file"]) for r in read_journal(partial)}
    assert len(done) >= 2 and (lost["split"], lost["file"]) not in done
    wavs = [partial / rate / lost["split"] / lost["file"] for rate in ("16000", "48000")]
    assert all(wav.exists() for wav in wavs)
    wavs[1].write_bytes(wavs[1].read_bytes()[:1000])  # as if killed while writing it
    assert _convert(scene_task, out, "binaural", banks["binaural"], "--seed", "3") == 0
    assert _files(out / "toy-scene-binaural") == _files(reference)


def test_rerun_is_idempotent_and_other_options_are_refused(reference, scene_task, banks, capsys):
    before = {p: p.stat().st_mtime_ns for p in reference.rglob("*")}
    out = reference.parent
    assert _convert(scene_task, out, "binaural", banks["binaural"], "--seed", "3") == 0
    assert "already complete" in capsys.readouterr().out
    assert {p: p.stat().st_mtime_ns for p in reference.rglob("*")} == before
    assert _convert(scene_task, out, "binaural", banks["binaural"], "--seed", "9") == 2
    assert "other options" in capsys.readouterr().err


def test_event_and_kfold_tasks_keep_times_and_folds(tmp_path, banks):
    src = tmp_path / "src"
    event = write_task(src, "toy-event", kind="event", rates=(48000,), seconds=1.5)
    folds = ("fold00", "fold01", "fold02")
    kfold = write_task(src, "toy-kfold", splits=folds, split_mode="presplit_kfold", rates=(16000,))
    out = tmp_path / "out"
    assert _convert(event, out, "ambisonics", banks["ambisonics"]) == 0
    assert _convert(kfold, out, "ambisonics", banks["ambisonics"]) == 0
    converted = out / "toy-event-ambisonics"
    for split in ("train", "valid", "test"):
        assert (converted / f"{split}.json").read_bytes() == (event / f"{split}.json").read_bytes()
    assert sf.info(str(converted / "48000" / "test" / "test-1.wav")).channels == 4
    assert sf.info(str(converted / "48000" / "test" / "test-1.wav")).frames == 72000
    kmeta = json.loads((out / "toy-kfold-ambisonics" / "task_metadata.json").read_text())
    assert kmeta["splits"] == list(folds) and kmeta["split_mode"] == "presplit_kfold"
    assert sorted(p.name for p in (out / "toy-kfold-ambisonics" / "16000").iterdir()) == list(folds)


def test_localization_task_labels_are_the_source_directions(tmp_path, scene_task, banks):
    out = tmp_path / "out"
    assert _convert(scene_task, out, "ambisonics", banks["ambisonics"], command="localize") == 0
    task = out / "toy-scene-localization-ambisonics"
    meta = json.loads((task / "task_metadata.json").read_text())
    assert (meta["prediction_type"], meta["embedding_type"]) == ("cartesian-regression", "scene")
    assert meta["evaluation"] == ["MAE", "DOE"]  # the kit's mean and median DoA error
    assert meta["splits"] == ["train", "valid", "test"]
    assert (task / "labelvocabulary.csv").read_text() == "idx,label\n0,x\n1,y\n2,z\n"
    records = {
        (r["split"], r["file"]): r
        for r in map(json.loads, (task / "scenes.jsonl").read_text().splitlines())
    }
    for split in meta["splits"]:
        labels = json.loads((task / f"{split}.json").read_text())
        assert set(labels) == set(json.loads((scene_task / f"{split}.json").read_text()))
        for name, label in labels.items():
            source = records[(split, name)]["scene"]["source"]
            assert len(label) == 3 and abs(np.linalg.norm(label) - 1) < 1e-5
            np.testing.assert_allclose(
                label, direction_vector(source["azimuth"], source["elevation"]), atol=1e-6
            )
    event = write_task(tmp_path / "src", "toy-event", kind="event", rates=(16000,))
    assert _convert(event, out, "ambisonics", banks["ambisonics"], command="localize") == 2


def test_gram_release_rirs_and_noise_recordings(tmp_path, scene_task):
    gram = tmp_path / "gram"
    gram.mkdir()
    rng = np.random.default_rng(0)
    for i, (az, el) in enumerate([(30.0, 10.0), (-120.0, -5.0)]):
        rirs = rng.standard_normal((2, 2, 800)) * np.exp(-np.arange(800) / 100)
        rirs[0, :, 0] += 1
        np.save(gram / f"scene{i}.npy", rirs.astype(np.float32))
        (gram / f"scene{i}.json").write_text(json.dumps({"azimuth": az, "elevation": el}))
    noise = tmp_path / "noise"
    noise.mkdir()
    sf.write(noise / "hum.wav", 0.1 * rng.standard_normal(2400), 8000)  # 0.3 s: looped
    sf.write(noise / "hiss.flac", 0.1 * rng.standard_normal(16000), 16000)
    out = tmp_path / "out"
    extra = ["--noise", str(noise), "--sample-rates", "16000"]
    assert _convert(scene_task, out, "binaural", gram, *extra, command="localize") == 0
    task = out / "toy-scene-localization-binaural"
    records = [json.loads(line) for line in (task / "scenes.jsonl").read_text().splitlines()]
    assert {r["noise"]["kind"] for r in records} == {"recording"}
    assert {r["noise"]["file"] for r in records} <= {"hum.wav", "hiss.flac"}
    assert not (task / "48000").exists()
    labels = json.loads((task / "train.json").read_text())
    for name, label in labels.items():
        record = next(r for r in records if r["file"] == name)
        expected = direction_vector(*[(30.0, 10.0), (-120.0, -5.0)][record["bank_scene"]])
        np.testing.assert_allclose(label, expected, atol=1e-6)
    # the 32-kHz GRAM bank cannot render 48 kHz
    assert _convert(scene_task, tmp_path / "x", "binaural", gram) == 2
    assert not (tmp_path / "x").exists()


def test_bad_input_is_reported_in_full_and_nothing_is_written(tmp_path, banks, capsys):
    src = write_task(tmp_path / "src", rates=(16000,))
    (src / "16000" / "train" / "train-0.wav").unlink()
    (src / "16000" / "test" / "test-0.wav").write_bytes(b"not a wav")
    sf.write(src / "16000" / "test" / "test-1.wav", np.zeros(8000, np.float32), 16000)
    sf.write(src / "16000" / "valid" / "valid-0.wav", np.zeros(22050, np.float32), 22050)
    (src / "abc").mkdir()
    labels = json.loads((src / "valid.json").read_text())
    labels["valid-1.wav"] = ["meow"]
    (src / "valid.json").write_text(json.dumps(labels))
    out = tmp_path / "out"
    assert _convert(src, out, "binaural", banks["binaural"]) == 2
    err = capsys.readouterr().err
    for problem in (
        "16000/train/train-0.wav is missing",
        "16000/test/test-0.wav is unreadable",
        "16000/test/test-1.wav has 8000 samples",
        "16000/valid/valid-0.wav is at 22050 Hz",
        "'abc' is not a sample rate",
        "label 'meow' is not in labelvocabulary.csv",
    ):
        assert problem in err, problem
    assert not out.exists()
    (src / "task_metadata.json").unlink()
    assert _convert(src, out, "binaural", banks["binaural"]) == 2
    assert "task_metadata.json is missing" in capsys.readouterr().err
    assert not out.exists()


def test_options_that_do_not_fit_are_refused(tmp_path, scene_task, banks, capsys):
    out = tmp_path / "out"
    assert _convert(scene_task, out, "ambisonics", banks["binaural"]) == 2
    assert "holds binaural RIRs" in capsys.readouterr().err
    assert _convert(scene_task, out, "binaural", banks["binaural"], "--sample-rates", "22050") == 2
    assert "asked for" in capsys.readouterr().err
    assert (
        _convert(
            scene_task,
            out,
            "binaural",
            banks["binaural"],
            "--num-shards",
            "2",
            "--shard-index",
            "2",
        )
        == 2
    )
    bad_noise = tmp_path / "noise"
    bad_noise.mkdir()
    (bad_noise / "x.wav").write_bytes(b"garbage")
    assert _convert(scene_task, out, "binaural", banks["binaural"], "--noise", str(bad_noise)) == 2
    assert "unreadable" in capsys.readouterr().err
    assert not out.exists()


def test_without_rirs_a_bank_is_simulated_into_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("NATHEEAR_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(convert_module, "SimulationSettings", lambda: FAST)
    src = write_task(tmp_path / "src", rates=(16000,), files_per_split=1)
    out = tmp_path / "out"
    assert main(["convert", str(src), str(out), "--format", "ambisonics", "--bank-size", "2"]) == 0
    banks = list((tmp_path / "cache" / "rirbanks").iterdir())
    assert len(banks) == 1 and banks[0].name.startswith("ambisonics-16000hz-2-seed0")
    bank = RirBank.open(banks[0])
    assert (len(bank), bank.sample_rate, bank.num_channels) == (2, 16000, 4)
    meta = json.loads((out / "toy-scene-ambisonics" / "task_metadata.json").read_text())
    assert meta["natheear"]["rir_bank"]["count"] == 2
    # a second task reuses the (warm) bank
    assert main(["localize", str(src), str(out), "--format", "ambisonics", "--bank-size", "2"]) == 0
    assert list((tmp_path / "cache" / "rirbanks").iterdir()) == banks


def _add_labels(split_file: Path, labels: dict) -> None:
    split_file.write_text(json.dumps({**json.loads(split_file.read_text()), **labels}))


def test_a_name_that_climbs_out_cannot_overwrite_a_file_outside_out(tmp_path, banks, capsys):
    src = write_task(tmp_path / "src", rates=(16000,))
    # ../../../../x/evil.wav leads from <src>/16000/train/ and from
    # <out>/<task>.partial/16000/train/ to tmp_path/x/evil.wav: a source read, then overwritten
    victim = tmp_path / "x" / "evil.wav"
    victim.parent.mkdir()
    shutil.copy(src / "16000" / "train" / "train-0.wav", victim)
    before = victim.read_bytes()
    _add_labels(src / "train.json", {"../../../../x/evil.wav": ["beep"]})
    out = tmp_path / "out"
    assert _convert(src, out, "binaural", banks["binaural"]) == 2
    assert "file name '../../../../x/evil.wav' has an empty, '.' or '..' part" in (
        capsys.readouterr().err
    )
    assert victim.read_bytes() == before and not out.exists()


def test_names_must_be_plain_relative_paths_inside_their_split_folder(tmp_path, banks, capsys):
    src = write_task(tmp_path / "src", rates=(16000,))
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    shutil.copy(src / "16000" / "train" / "train-0.wav", outside / "y.wav")
    (src / "16000" / "train" / "link.wav").symlink_to(outside / "y.wav")
    (src / "16000" / "train" / "linked").symlink_to(outside, target_is_directory=True)
    bad = {
        str(outside / "y.wav"): "is an absolute path",
        "C:/y.wav": "is an absolute path",
        "sub\\..\\..\\y.wav": "holds a backslash",
        "a//train-0.wav": "has an empty, '.' or '..' part",
        "./train-0.wav": "has an empty, '.' or '..' part",
        "sub/": "has an empty, '.' or '..' part",
        "": "is empty",
        "y\x00.wav": "holds a control character",
    }
    _add_labels(src / "train.json", {name: ["beep"] for name in [*bad, "link.wav", "linked/y.wav"]})
    out = tmp_path / "out"
    assert _convert(src, out, "binaural", banks["binaural"]) == 2
    err = capsys.readouterr().err
    for name, problem in bad.items():
        assert f"train.json: file name {name!r} {problem}" in err, name
    for rel in ("16000/train/link.wav", "16000/train/linked/y.wav"):
        assert f"{rel} leads out of 16000/train/ through a symbolic link" in err, rel
    assert not out.exists()
    # split names become file and folder names: one plain name each
    metadata = json.loads((src / "task_metadata.json").read_text())
    for splits, problem in (
        (["train", "../valid"], "split name '../valid' must be a single name"),
        (["train", ".."], "split name '..' has an empty, '.' or '..' part"),
        (["train", "train"], "split 'train' is listed twice"),
        (["train", 3], "split name 3 must be a string, got int"),
    ):
        (src / "task_metadata.json").write_text(json.dumps({**metadata, "splits": splits}))
        assert _convert(src, out, "binaural", banks["binaural"]) == 2
        assert problem in capsys.readouterr().err
    assert main(["convert", str(src), str(out), "--format", "binaural", "--name", "../up"]) == 2
    assert "--name '../up' must be a single name" in capsys.readouterr().err
    assert not out.exists()


def test_names_in_subfolders_are_converted_and_previewed(tmp_path, banks):
    from natheear_tasks.tasks.preview import _true_direction

    src = write_task(tmp_path / "src", rates=(16000,), files_per_split=1)
    (src / "16000" / "test" / "deep" / "er").mkdir(parents=True)
    os.rename(src / "16000" / "test" / "test-0.wav", src / "16000" / "test" / "deep/er/t.wav")
    (src / "test.json").write_text(json.dumps({"deep/er/t.wav": ["beep"]}))
    out = tmp_path / "out"
    assert _convert(src, out, "ambisonics", banks["ambisonics"]) == 0
    task = out / "toy-scene-ambisonics"
    assert sf.info(str(task / "16000" / "test" / "deep" / "er" / "t.wav")).channels == 4
    (record,) = [
        r
        for r in map(json.loads, (task / "scenes.jsonl").read_text().splitlines())
        if r["split"] == "test"
    ]
    assert record["file"] == "deep/er/t.wav"
    wav = task / "16000" / "test" / "deep" / "er" / "t.wav"
    assert _true_direction(wav) == record["scene"]["source"]


def test_a_bank_index_naming_files_outside_the_bank_is_refused(tmp_path, scene_task, banks):
    bank = tmp_path / "bank"
    shutil.copytree(banks["ambisonics"], bank)
    index = bank / "scenes.jsonl"
    records = [json.loads(line) for line in index.read_text().splitlines()]
    for name in ("../elsewhere.npy", "/tmp/x.npy"):
        records[1]["file"] = name
        index.write_text("".join(json.dumps(r) + "\n" for r in records))
        with pytest.raises(RirBankError, match=f"line 2: file {name!r}"):
            RirBank.open(bank)
    (bank / "rirs" / "link.npy").symlink_to(tmp_path / "elsewhere.npy")
    records[1]["file"] = "rirs/link.npy"
    index.write_text("".join(json.dumps(r) + "\n" for r in records))
    with pytest.raises(RirBankError, match="leads out of the bank through a symbolic link"):
        RirBank.open(bank)


def test_non_finite_samples_and_a_vocabulary_without_labels_are_listed(
    tmp_path, banks, capsys, monkeypatch
):
    monkeypatch.setattr(taskdir, "FINITE_CHECK_FRAMES", 4096)  # 4 blocks per wav
    src = write_task(tmp_path / "src", rates=(16000,), subtype="FLOAT")
    for rel, subtype, value, at in (
        ("16000/train/train-0.wav", "FLOAT", np.nan, [9000, 100]),
        ("16000/valid/valid-1.wav", "FLOAT", np.inf, [7]),
        ("16000/test/test-0.wav", "DOUBLE", -np.inf, [15999]),
    ):
        audio, rate = sf.read(str(src / rel), dtype="float64")
        audio[at] = value
        sf.write(src / rel, audio, rate, subtype=subtype)
    (src / "labelvocabulary.csv").write_text("idx,label\n")
    out = tmp_path / "out"
    assert _convert(src, out, "binaural", banks["binaural"]) == 2
    err = capsys.readouterr().err
    for problem in (
        "16000/train/train-0.wav has 2 samples that are NaN or infinite (the first at sample 100)",
        "16000/valid/valid-1.wav has 1 samples that are NaN or infinite (the first at sample 7)",
        "16000/test/test-0.wav has 1 samples that are NaN or infinite (the first at sample 15999)",
        "labelvocabulary.csv lists no labels (only its header)",
    ):
        assert problem in err, problem
    assert "problem(s)" in err and not out.exists()


def test_a_vocabulary_that_is_not_utf8_is_a_listed_problem(tmp_path, banks, capsys):
    src = write_task(tmp_path / "src", rates=(16000,))
    (src / "labelvocabulary.csv").write_bytes(b"idx,label\n0,caf\xe9\n")  # Latin-1
    out = tmp_path / "out"
    assert _convert(src, out, "binaural", banks["binaural"]) == 2
    assert "labelvocabulary.csv cannot be read ('utf-8' codec" in capsys.readouterr().err
    assert not out.exists()


def test_malformed_labels_splits_and_outputs_get_a_one_line_reason(tmp_path, banks, capsys):
    src = write_task(tmp_path / "src", rates=(16000,))
    out = tmp_path / "out"
    labels = (src / "train.json").read_text()
    _add_labels(src / "train.json", {"train-0.wav": [["beep"]]})
    assert _convert(src, out, "binaural", banks["binaural"]) == 2
    assert "train.json['train-0.wav']: a label must be a string, got list" in (
        capsys.readouterr().err
    )
    (src / "train.json").write_text(labels)
    event = write_task(tmp_path / "src", "toy-event", kind="event", rates=(16000,))
    _add_labels(event / "test.json", {"test-1.wav": [{"label": ["hum"], "start": 0, "end": 9}]})
    assert _convert(event, out, "binaural", banks["binaural"]) == 2
    assert "test.json['test-1.wav']: a label must be a string, got list" in (
        capsys.readouterr().err
    )
    metadata = json.loads((src / "task_metadata.json").read_text())
    for splits in ("train", 5, [], {"train": 1}):
        (src / "task_metadata.json").write_text(json.dumps({**metadata, "splits": splits}))
        assert _convert(src, out, "binaural", banks["binaural"]) == 2
        assert "splits must be a non-empty list of split names" in capsys.readouterr().err
    (src / "task_metadata.json").write_text(json.dumps(metadata))
    assert not out.exists()
    (out / "toy-scene-binaural").mkdir(parents=True)  # empty: not a converted task
    assert _convert(src, out, "binaural", banks["binaural"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "exists and is not a task converted by natheear-tasks" in err
    (out / "toy-scene-binaural" / "task_metadata.json").write_text("{")
    assert _convert(src, out, "binaural", banks["binaural"]) == 2
    assert "exists and is not a task converted" in capsys.readouterr().err
    (tmp_path / "file").write_text("not a folder")
    assert _convert(src, tmp_path / "file", "binaural", banks["binaural"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"OUT {tmp_path / 'file'} is a file" in err


def _next_second() -> None:
    """Sleep into the next wall-clock second (libsndfile's PEAK chunk holds the time)."""
    time.sleep(1.01 - time.time() % 1)


def test_wav_bytes_do_not_depend_on_the_time_of_writing():
    audio = np.random.default_rng(0).uniform(-1, 1, (1000, 4)).astype(np.float32)
    subtypes = ("PCM_16", "PCM_24", "PCM_32", "FLOAT", "DOUBLE")
    first = {subtype: wav_bytes(audio, 16000, subtype) for subtype in subtypes}
    _next_second()
    assert {subtype: wav_bytes(audio, 16000, subtype) for subtype in subtypes} == first
    for subtype in ("FLOAT", "DOUBLE"):
        info = sf.info(io.BytesIO(first[subtype]))
        assert (info.subtype, info.frames, info.channels) == (subtype, 1000, 4)
        assert np.array_equal(sf.read(io.BytesIO(first[subtype]), dtype="float32")[0], audio)


def test_float_source_wavs_convert_to_the_same_bytes_every_time(tmp_path, banks):
    src = write_task(tmp_path / "src", rates=(16000,), subtype="FLOAT", files_per_split=1)
    runs = []
    for n in range(2):
        _next_second()
        assert (
            _convert(src, tmp_path / f"out{n}", "binaural", banks["binaural"], "--seed", "3") == 0
        )
        runs.append(_files(tmp_path / f"out{n}" / "toy-scene-binaural"))
    assert runs[0] == runs[1]
    wav = tmp_path / "out0" / "toy-scene-binaural" / "16000" / "test" / "test-0.wav"
    assert sf.info(str(wav)).subtype == "FLOAT"


def test_written_files_and_folders_follow_the_umask(tmp_path, scene_task, banks):
    out = tmp_path / "out"
    old = os.umask(0o027)
    try:
        extra = ["--sample-rates", "16000"]
        assert _convert(scene_task, out, "binaural", banks["binaural"], *extra) == 0
        writer = RirBankWriter(out / "bank", "ambisonics", 16000, 1, {"seed": 0})
        writer.start()
        writer.write_scene(0, np.zeros((1, 4, 8), np.float32), {"source": {}})
        writer.finalize()
        audio = np.zeros(1600, np.float32)
        task = synth.SynthTask({"task_name": "t"}, ["a"], {"train": {"x.wav": (audio, ["a"])}})
        synth.write_task(out / "synth", task)
        atomic_write_json(out / "summary.json", {"a": 1})
    finally:
        os.umask(old)
    modes = {
        path.relative_to(out).as_posix(): (path.is_dir(), stat.S_IMODE(path.stat().st_mode))
        for path in out.rglob("*")
    }
    assert {"toy-scene-binaural/train.json", "bank/bank.json", "synth/t/task_metadata.json"} < set(
        modes
    )
    wrong = {p: oct(m) for p, (d, m) in modes.items() if m != (0o750 if d else 0o640)}
    assert not wrong, wrong


def _rename_then_die(monkeypatch) -> None:
    """Make the converter stop (as on a kill) just after it renames a folder."""
    rename = os.rename

    def rename_then_die(a, b):
        rename(a, b)
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "rename", rename_then_die)


def test_a_run_killed_just_after_publishing_leaves_no_work_files(
    tmp_path, scene_task, reference, banks, monkeypatch
):
    out = tmp_path / "out"
    _rename_then_die(monkeypatch)
    assert _convert(scene_task, out, "binaural", banks["binaural"], "--seed", "3") == 130
    monkeypatch.undo()
    assert sorted(p.name for p in out.iterdir()) == ["toy-scene-binaural"]
    assert _files(out / "toy-scene-binaural") == _files(reference)
    assert not list((out / "toy-scene-binaural").glob(".*"))


def test_a_rerun_publishes_a_finished_partial_and_cleans_a_published_task(
    tmp_path, scene_task, reference, banks, monkeypatch, capsys
):
    out = tmp_path / "out"
    monkeypatch.setattr(os, "rename", lambda a, b: (_ for _ in ()).throw(KeyboardInterrupt))
    assert _convert(scene_task, out, "binaural", banks["binaural"], "--seed", "3") == 130
    monkeypatch.undo()
    partial = out / "toy-scene-binaural.partial"
    assert (partial / "task_metadata.json").exists() and not (partial / ".journal").exists()
    (partial / ".scenes.jsonl.1234.tmp").write_text("cut short")  # an atomic write killed
    capsys.readouterr()
    assert _convert(scene_task, out, "binaural", banks["binaural"], "--seed", "3") == 0
    assert "converted 0 files" in capsys.readouterr().out
    assert _files(out / "toy-scene-binaural") == _files(reference)
    assert not list((out / "toy-scene-binaural").glob(".*"))
    # a task published with its work files inside (killed between publishing and cleaning)
    task = out / "toy-scene-binaural"
    (task / ".journal").mkdir()
    (task / ".journal" / "0.jsonl").write_text("{}\n")
    (task / ".natheear-job.json").write_text("{}")
    assert _convert(scene_task, out, "binaural", banks["binaural"], "--seed", "3") == 0
    assert "removed the work files" in capsys.readouterr().out
    assert _files(task) == _files(reference) and not list(task.glob(".*"))
