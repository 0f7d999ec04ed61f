"""natheear-tasks seld: simulated SELD datasets of both DCASE layouts as HEAR event,
localization and SELD tasks; labels equal to the CSVs, FuMa input, channel-order checks,
refused datasets, splits, byte-identical and resumed reruns."""

import dataclasses
import json
import math
import pickle
import shutil
import subprocess
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from natheear_tasks.ambisonics import active_intensity, ambix_to_fuma, stft_size
from natheear_tasks.cli import main
from natheear_tasks.formats import published
from natheear_tasks.formats.dcase_events import read_event_csv
from natheear_tasks.formats.dcase_frames import FrameRow, direction_xyz, read_frame_csv
from natheear_tasks.simulation.recordings import Settings, write_dataset
from natheear_tasks.tasks import seld
from natheear_tasks.tasks.publish import OutputError
from natheear_tasks.tasks.seld_dataset import Dataset, Recording, read_dataset
from natheear_tasks.tasks.seld_plan import assign_splits
from natheear_tasks.tasks.taskdir import TaskError

RATE = 16000
OPTIONS = {"event_seconds": 4.0, "localization_seconds": 0.5, "sample_rates": (RATE,)}
TASK_FILES = {"events": "pieces.jsonl", "localization": "segments.jsonl", "seld": "chunks.jsonl"}


def _convert(src: Path, out: Path, layout: str, **options) -> seld.Job:
    job = seld.prepare(src, out, seld.Options(layout=layout, **{**OPTIONS, **options}))
    seld.run(job)
    return job


@pytest.fixture(scope="module")
def frames_src(tmp_path_factory):
    """4 recordings of 8.5 s at 16 kHz, frame lists with distances; folds 1, 2, 3, 1 in
    dev-train, dev-val, dev-test."""
    root = tmp_path_factory.mktemp("frames")
    settings = Settings("frames", files=4, seconds=8.5, sample_rate=RATE, distance=True, seed=1)
    return write_dataset(root / "toyframes", settings)


@pytest.fixture(scope="module")
def events_src(tmp_path_factory):
    """4 recordings of 8.5 s at 16 kHz, event lists; splits 1, 2, 3, 1."""
    root = tmp_path_factory.mktemp("events")
    return write_dataset(
        root / "toyevents", Settings("events", files=4, seconds=8.5, sample_rate=RATE, seed=2)
    )


@pytest.fixture(scope="module")
def frames_out(frames_src, tmp_path_factory):
    out = tmp_path_factory.mktemp("frames-out")
    _convert(frames_src, out, "frames", sample_rates=(RATE, 24000))
    return out


@pytest.fixture(scope="module")
def events_out(events_src, tmp_path_factory):
    out = tmp_path_factory.mktemp("events-out")
    _convert(events_src, out, "events")
    return out


def _records(task: Path) -> list[dict]:
    lines = (task / TASK_FILES[task.name.rsplit("-", 1)[1]]).read_text().splitlines()
    return [json.loads(line) for line in lines]


def _labels(task: Path, record: dict):
    return json.loads((task / f"{record['split']}.json").read_text())[record["file"]]


def _csv(src: Path, identity: str) -> Path:
    return src / "metadata_dev" / f"{identity}.csv"


def _tree(folder: Path) -> dict[str, bytes]:
    return {
        p.relative_to(folder).as_posix(): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


# --- the three tasks of a frame-list dataset ------------------------------------------------


def test_frame_list_tasks_have_the_contracted_layout(frames_out):
    names = sorted(p.name for p in frames_out.iterdir())
    assert names == ["toyframes-events", "toyframes-localization", "toyframes-seld"]
    classes = [f"class{i}" for i in range(6)]
    for task in frames_out.iterdir():
        metadata = json.loads((task / "task_metadata.json").read_text())
        assert metadata["split_mode"] == "trainvaltest"
        assert metadata["splits"] == ["train", "valid", "test"]
        described = metadata["natheear"]
        assert described["dataset"]["layout"] == "frames" and described["sample_rates"] == [
            16000,
            24000,
        ]
        assert described["channel_order"]["read"] == "acn"
        assert described["splits"]["members"] == {
            "train": ["dev-train"],
            "valid": ["dev-val"],
            "test": ["dev-test"],
        }
        for split in metadata["splits"]:
            labels = json.loads((task / f"{split}.json").read_text())
            assert labels, (task.name, split)
            for rate in (16000, 24000):
                wavs = sorted(p.name for p in (task / str(rate) / split).iterdir())
                assert wavs == sorted(labels)
                for wav in wavs[:3]:
                    info = sf.info(task / str(rate) / split / wav)
                    assert info.channels == 4 and info.samplerate == rate
                    assert info.frames == round(metadata["sample_duration"] * rate)
        assert not any(p.name.startswith(".") for p in task.iterdir())  # no work files left
    seld_meta = json.loads((frames_out / "toyframes-seld" / "task_metadata.json").read_text())
    # the published format (the GRAM authors' RealSELD tasks and listen-eval-kit)
    assert {k: seld_meta[k] for k in ("embedding_type", "prediction_type", "evaluation")} == {
        "embedding_type": "event",
        "prediction_type": "accdoa",
        "evaluation": ["SELD"],
    }
    assert seld_meta["scoring_params"] == {"doa_threshold": 20.0, "average": "macro"}
    assert seld_meta["source_dynamics"] == "dynamic" and seld_meta["_nb_label_frames_1s"] == 10
    assert seld_meta["sample_duration"] == 5.0
    vocabulary = (frames_out / "toyframes-seld" / "labelvocabulary.csv").read_text()
    assert vocabulary == "idx,label\n" + "".join(f"{i},{c}\n" for i, c in enumerate(classes))
    local = json.loads((frames_out / "toyframes-localization" / "task_metadata.json").read_text())
    assert local["prediction_type"] == "cartesian-regression"
    assert local["evaluation"] == ["MAE", "DOE"]
    assert local["embedding_type"] == "scene" and local["sample_duration"] == 0.5
    events = json.loads((frames_out / "toyframes-events" / "task_metadata.json").read_text())
    assert events["prediction_type"] == "multilabel" and events["sample_duration"] == 4.0
    assert events["evaluation"] == ["event_onset_200ms_fms", "segment_1s_er"]


def test_seld_events_give_back_the_csv_rows(frames_src, frames_out):
    """Published events ({label, start, end, direction: [az, el], source_idx, distance}),
    read back to 100-ms frames, are the dataset's rows."""
    task = frames_out / "toyframes-seld"
    metadata = json.loads((task / "task_metadata.json").read_text())
    classes, _ = published.read_vocabulary(task / "labelvocabulary.csv")
    fmt, problems = published.seld_format(metadata, classes)
    assert not problems
    rebuilt: dict[str, list[FrameRow]] = {}
    moving = 0
    for record in _records(task):
        assert record["end_seconds"] - record["start_seconds"] == 5.0
        assert record["first_frame"] == round(record["start_seconds"] * 10)
        events = _labels(task, record)
        assert all(set(e) == {"label", "start", "end", "direction", "source_idx", "distance"}
                   for e in events)  # fmt: skip
        moving += sum(e["end"] - e["start"] == 100 for e in events)
        rows, problems = published.event_rows(events, record["file"], fmt, 50)
        assert not problems
        rebuilt.setdefault(record["recording"], []).extend(
            dataclasses.replace(r, frame=r.frame + record["first_frame"]) for r in rows
        )
    assert len(rebuilt) == 4 and moving > 0  # moving sources: one event per frame
    for identity, rows in rebuilt.items():
        assert sorted(rows, key=lambda r: (r.frame, r.cls, r.source)) == read_frame_csv(
            _csv(frames_src, identity)
        )


def _tracks(rows: list[FrameRow]) -> list[tuple[int, float, float]]:
    """(class, start s, end s) of runs of consecutive frames of each (class, source)."""
    frames: dict[tuple[int, int], list[int]] = {}
    for row in rows:
        frames.setdefault((row.cls, row.source), []).append(row.frame)
    runs = []
    for (cls, _), ks in frames.items():
        start = previous = ks[0]
        for k in ks[1:] + [None]:
            if k == previous + 1 if k is not None else False:
                previous = k
                continue
            runs.append((cls, start / 10, (previous + 1) / 10))
            if k is not None:
                start = previous = k
    return runs


def _clipped(events, start: float, seconds: float) -> list[tuple[str, float, float]]:
    """Events (label, start s, end s) cut to a piece, in ms from its start."""
    out = []
    for label, a, b in events:
        lo, hi = max(a, start), min(b, start + seconds)
        if hi > lo:
            out.append((label, round(1000 * (lo - start), 3), round(1000 * (hi - start), 3)))
    return sorted(out, key=lambda e: (e[1], e[2], e[0]))


def test_event_labels_equal_the_csv_events_of_both_layouts(
    frames_src, frames_out, events_src, events_out
):
    for src, task in (
        (frames_src, frames_out / "toyframes-events"),
        (events_src, events_out / "toyevents-events"),
    ):
        covered: dict[str, float] = {}
        for record in _records(task):
            csv = _csv(src, record["recording"])
            if src.name == "toyframes":
                rows = read_frame_csv(csv)
                events = [(f"class{c}", a, b) for c, a, b in _tracks(rows)]
            else:
                events = [(e.label, e.start, e.end) for e in read_event_csv(csv)]
            labels = [(x["label"], x["start"], x["end"]) for x in _labels(task, record)]
            assert labels == _clipped(events, record["start_seconds"], 4.0)
            assert record["start_seconds"] == covered.get(record["recording"], 0.0)
            covered[record["recording"]] = record["end_seconds"]
        assert len(covered) == 4 and all(8.5 <= end < 12.5 for end in covered.values())


def test_event_list_frames_follow_the_overlap_rule(events_src, events_out):
    """An event labels each 100-ms frame it overlaps; overlapping events of one class are
    told apart by their source index."""
    task = events_out / "toyevents-seld"
    metadata = json.loads((task / "task_metadata.json").read_text())
    assert metadata["source_dynamics"] == "static"
    classes, _ = published.read_vocabulary(task / "labelvocabulary.csv")
    fmt, _ = published.seld_format(metadata, classes)
    for record in _records(task):
        events = read_event_csv(_csv(events_src, record["recording"]))
        expected = {}
        for e in events:
            for k in range(math.floor(e.start * 10 + 1e-9), math.ceil(e.end * 10 - 1e-9)):
                expected.setdefault((k, e.label), []).append((e.azimuth, e.elevation))
        got = {}
        rows, problems = published.event_rows(_labels(task, record), record["file"], fmt, 50)
        assert not problems
        for row in rows:
            key = (record["first_frame"] + row.frame, classes[row.cls])
            got.setdefault(key, []).append((row.azimuth, row.elevation, row.source))
        first = record["first_frame"]
        mine = {key: v for key, v in expected.items() if first <= key[0] < first + 50}
        assert sorted(got) == sorted(mine)
        for key, sources in got.items():
            assert sorted(s[:2] for s in sources) == sorted(mine[key])
            assert len({s[2] for s in sources}) == len(sources)  # distinct source indices


@pytest.mark.parametrize("layout", ["frames", "events"])
def test_localization_labels_and_their_intensity_directions(
    layout, frames_src, frames_out, events_src, events_out
):
    """Each window holds exactly one source for its whole length; its label is that
    source's direction; the active intensity of the written FOA agrees with the label
    (stated bound: median below 20 degrees, 75 % of windows below 30; the others are
    windows just after a louder event whose reverberation lingers)."""
    src, task = (frames_src, frames_out) if layout == "frames" else (events_src, events_out)
    task = task / f"{src.name}-localization"
    errors = []
    for record in _records(task):
        label = np.array(_labels(task, record))
        a, b = record["start_seconds"], record["end_seconds"]
        assert b - a == pytest.approx(0.5)
        if layout == "frames":
            rows = [
                r
                for r in read_frame_csv(_csv(src, record["recording"]))
                if a <= r.frame / 10 < b - 1e-9
            ]
            assert len(rows) == 5 and len({(r.cls, r.source) for r in rows}) == 1
            assert f"class{rows[0].cls}" == record["class"]
            mean = np.sum([r.direction for r in rows], axis=0)
            assert label == pytest.approx(mean / np.linalg.norm(mean), abs=1e-6)
        else:
            active = [
                e
                for e in read_event_csv(_csv(src, record["recording"]))
                if e.start < b and a < e.end
            ]
            assert len(active) == 1 and active[0].start <= a and b <= active[0].end
            assert active[0].label == record["class"]
            assert label == pytest.approx(active[0].direction, abs=1e-6)
        assert label == pytest.approx(
            direction_xyz(record["azimuth"], record["elevation"]), abs=1e-5
        )
        audio, rate = sf.read(task / str(RATE) / record["split"] / record["file"], dtype="float64")
        n_fft = stft_size(rate)
        intensity, _ = active_intensity(torch.from_numpy(audio.T.copy()), rate, n_fft, n_fft // 2)
        vector = intensity.sum(-1).numpy()
        errors.append(
            math.degrees(math.acos(np.clip(vector @ label / np.linalg.norm(vector), -1, 1)))
        )
    assert len(errors) >= 8
    assert np.median(errors) < 20 and np.mean(np.array(errors) < 30) >= 0.75, np.round(errors, 1)


# --- reruns, resume, existing output ---------------------------------------------------------


def test_reruns_are_byte_identical_and_a_killed_run_resumes(
    frames_src, frames_out, tmp_path, monkeypatch
):
    first = {
        name: _tree(frames_out / name) for name in sorted(p.name for p in frames_out.iterdir())
    }
    job = _convert(frames_src, frames_out, "frames", sample_rates=(RATE, 24000))  # complete: no-op
    assert {name: _tree(frames_out / name) for name in first} == first
    assert all(t.final.exists() for t in job.tasks)

    original, calls = seld._convert, []

    def dies_on_the_third(work):
        calls.append(work.identity)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return original(work)

    monkeypatch.setattr(seld, "_convert", dies_on_the_third)
    out = tmp_path / "again"
    with pytest.raises(KeyboardInterrupt):
        _convert(frames_src, out, "frames", sample_rates=(RATE, 24000))
    assert sorted(p.name for p in out.iterdir()) == sorted(f"{n}.partial" for n in first)
    monkeypatch.setattr(seld, "_convert", original)
    job = seld.prepare(
        frames_src, out, seld.Options(layout="frames", **{**OPTIONS, "sample_rates": (RATE, 24000)})
    )
    summary = seld.run(job)
    assert summary.converted == 2 and summary.skipped == 2
    assert sorted(p.name for p in out.iterdir()) == sorted(first)
    assert {name: _tree(out / name) for name in first} == first
    parallel = tmp_path / "parallel"
    _convert(frames_src, parallel, "frames", sample_rates=(RATE, 24000), workers=2)
    assert {name: _tree(parallel / name) for name in first} == first


def test_other_options_on_an_existing_output_are_refused(frames_src, frames_out, capsys):
    args = [
        "seld",
        str(frames_src),
        str(frames_out),
        "--layout",
        "frames",
        "--sample-rates",
        "16000",
    ]
    args += ["--event-seconds", "4", "--localization-seconds", "0.5"]
    assert main(args) == 2
    assert "exists from a conversion with other options" in capsys.readouterr().err
    with pytest.raises(OutputError):
        seld.prepare(
            frames_src,
            frames_out,
            seld.Options(layout="frames", **{**OPTIONS, "segment_seconds": 2.0}),
        )


def test_clipped_samples_are_counted_and_reported(events_src, tmp_path, capsys):
    """PCM outputs clip at full scale (here: resampling overshoot of a full-scale wav); the
    run says how many samples it clipped."""
    loud = shutil.copytree(events_src, tmp_path / "loud")
    wav = sorted((loud / "foa_dev").glob("*.wav"))[0]
    audio, rate = sf.read(wav)
    noise = np.random.default_rng(0).choice([-1.0, 1.0], audio.shape)  # full-scale noise
    sf.write(wav, noise * 32767 / 32768, rate, subtype="PCM_16")
    args = ["seld", str(loud), str(tmp_path / "out"), "--layout", "events", "--sample-rates"]
    args += ["24000", "--event-seconds", "4", "--localization-seconds", "0.5", "--tasks", "seld"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "loud-seld:" in printed and "samples past full scale were clipped" in printed
    count = int(printed.split("loud-seld: ")[1].split()[0])
    assert count > 100
    files = sorted((tmp_path / "out" / "loud-seld" / "24000").rglob(f"{wav.stem}-*.wav"))
    written = np.concatenate([sf.read(f)[0] for f in files])
    assert np.abs(written).max() <= 1.0 and np.sum(np.abs(written) >= 32767 / 32768) >= count


def test_a_dead_worker_is_one_line_and_exit_1(frames_src, tmp_path, monkeypatch, capsys):
    def dies(job):
        raise BrokenProcessPool("a child process terminated abruptly")

    monkeypatch.setattr(seld, "run", dies)
    args = ["seld", str(frames_src), str(tmp_path / "out"), "--layout", "frames"]
    assert main([*args, "--localization-seconds", "0.5"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "a worker process died" in err


# --- channel order -------------------------------------------------------------------------


def _as_fuma(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    for wav in (dst / "foa_dev").rglob("*.wav"):
        audio, rate = sf.read(wav, dtype="float64")
        fuma = ambix_to_fuma(torch.from_numpy(audio.T.copy())).numpy().T
        sf.write(wav, fuma, rate, subtype="PCM_16")
    return dst


def test_fuma_input_converts_to_the_same_ambix_output(events_src, events_out, tmp_path):
    fuma = _as_fuma(events_src, tmp_path / "toyevents")
    out = tmp_path / "out"
    job = _convert(fuma, out, "events")
    assert job.order == "fuma"
    assert job.check.median_error_deg["fuma"] < 20 < 60 < job.check.median_error_deg["acn"]
    assert job.check.dipole_ratio == pytest.approx(2.0, abs=0.3)
    for task in sorted(p.name for p in events_out.iterdir()):
        ours, theirs = _tree(out / task), _tree(events_out / task)
        assert sorted(ours) == sorted(theirs)
        for name, data in ours.items():
            if name.endswith(".wav"):
                a, _ = sf.read(out / task / name, dtype="float64")
                b, _ = sf.read(events_out / task / name, dtype="float64")
                assert np.abs(a - b).max() <= 3 / 32768, name  # PCM_16 rounding of the FuMa copy
            elif name != "task_metadata.json":
                assert data == theirs[name], name
        described = json.loads(ours["task_metadata.json"])["natheear"]
        assert described["channel_order"]["read"] == "fuma" and "FuMa" in described["conversion"]
    again = tmp_path / "again"
    _convert(fuma, again, "events")  # FLOAT wavs: the same bytes too
    for task in sorted(p.name for p in events_out.iterdir()):
        assert _tree(again / task) == _tree(out / task)
        assert sf.info(next((again / task).rglob("*.wav"))).subtype == "FLOAT"


def test_a_channel_order_the_data_cannot_tell_is_refused(events_src, frames_src, tmp_path, capsys):
    mirrored = shutil.copytree(events_src, tmp_path / "mirrored")
    for csv in (mirrored / "metadata_dev").glob("*.csv"):
        lines = csv.read_text().splitlines()
        rows = [line.split(",") for line in lines[1:]]
        flipped = [",".join([*r[:4], f"{-float(r[4]):.2f}", r[5]]) for r in rows]
        csv.write_text("\n".join([lines[0], *flipped]) + "\n")  # clockwise azimuths
    out = tmp_path / "out"
    args = ["seld", str(mirrored), str(out), "--layout", "events", "--sample-rates", "16000"]
    args += ["--event-seconds", "4", "--localization-seconds", "0.5"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "neither order agrees" in err and "--channel-order" in err
    assert not out.exists()
    assert main([*args, "--channel-order", "acn", "--tasks", "seld"]) == 0  # the user's word
    assert sorted(p.name for p in out.iterdir()) == ["mirrored-seld"]

    fuma_frames = _as_fuma(frames_src, tmp_path / "fumaframes")
    with pytest.raises(seld.SeldError, match="reads as FuMa"):
        seld.prepare(fuma_frames, tmp_path / "o2", seld.Options(layout="frames", **OPTIONS))
    job = seld.prepare(
        fuma_frames, tmp_path / "o2", seld.Options(layout="frames", channel_order="fuma", **OPTIONS)
    )
    assert job.order == "fuma" and not (tmp_path / "o2").exists()


# --- refused datasets ------------------------------------------------------------------------


def test_a_bad_frame_list_dataset_is_refused_with_every_problem(frames_src, tmp_path, capsys):
    bad = shutil.copytree(frames_src, tmp_path / "bad")
    meta, foa = bad / "metadata_dev", bad / "foa_dev"
    (meta / "dev-train/fold1_room0_mix001.csv").unlink()  # a wav without its CSV
    (meta / "dev-train/fold1_room9_mix009.csv").write_text("0,0,0,0,0,100\n")  # a CSV alone
    with open(meta / "dev-test/fold3_room2_mix001.csv", "a") as f:
        f.write("90,0,0,0,0,100\n")  # the frame starts at 9 s, the wav is 8.5 s
    with open(meta / "dev-val/fold2_room1_mix001.csv", "a") as f:
        f.write("3,1,7,200,0,100\n")  # azimuth out of range
    with open(meta / "dev-train/fold1_room3_mix002.csv", "a") as f:
        f.write("4,1,8,10,0\n")  # no distance where the others have one
    audio, rate = sf.read(foa / "dev-test/fold3_room2_mix001.wav")
    sf.write(foa / "dev-test/fold3_room2_mix001.wav", audio[:, :2], rate)  # 2 channels
    sf.write(foa / "dev-train/fold1_room3_mix002.wav", audio, 24000)  # another rate
    shutil.copy(meta / "dev-val/fold2_room1_mix001.csv", meta / "dev-val/bad name.csv")
    shutil.copy(foa / "dev-val/fold2_room1_mix001.wav", foa / "dev-val/bad name.wav")
    (foa / "dev-val/extra.flac").write_bytes(b"")
    audio, rate = sf.read(foa / "dev-val/fold2_room1_mix001.wav")
    audio[1000, 2] = np.nan
    sf.write(foa / "dev-val/fold2_room1_mix001.wav", audio, rate, subtype="FLOAT")
    out = tmp_path / "out"
    assert main(["seld", str(bad), str(out), "--layout", "frames"]) == 2
    err = capsys.readouterr().err
    expected = [
        "dev-train/fold1_room0_mix001.wav has no metadata_dev/dev-train/fold1_room0_mix001.csv",
        "dev-train/fold1_room9_mix009.csv has no foa_dev/dev-train/fold1_room9_mix009.wav",
        "frames [90] start after the end of the wav (8.500 s)",
        "azimuth 200.0 outside [-180, 180]",
        "some frame-list rows have a distance column and some do not",
        "fold3_room2_mix001.wav has 2 channels",
        "several sample rates",
        "'bad name.wav' is not",
        "extra.flac: only .wav audio is read",
        "fold2_room1_mix001.wav has 1 samples that are NaN or infinite (the first at sample 1000)",
    ]
    for problem in expected:
        assert problem in err, problem
    assert "nothing was written" in err and not out.exists()


def test_a_bad_event_list_dataset_is_refused_with_every_problem(events_src, tmp_path):
    bad = shutil.copytree(events_src, tmp_path / "bad")
    csvs = sorted((bad / "metadata_dev").glob("*.csv"))
    header = "sound_event_recording,start_time,end_time,ele,azi,dist\n"
    csvs[0].write_text(csvs[0].read_text() + 'Alarm,0.5,1.0,0,0,1\n"a,b",1,2,0,0,1\n')
    csvs[1].write_text(csvs[1].read_text() + "alarm,8.0,8.7,0,0,1\n")  # ends 0.2 s past the wav
    csvs[2].write_text(csvs[2].read_text().replace(header, ""))  # no header
    csvs[3].write_text(csvs[3].read_text() + "alarm,1.0,0.5,0,0,1\n")  # ends before it starts
    with pytest.raises(TaskError) as info:
        seld.prepare(bad, tmp_path / "out", seld.Options(layout="events", **OPTIONS))
    problems = "\n".join(info.value.problems)
    assert "class names differ only in case across files: ['Alarm', 'alarm']" in problems
    assert "'alarm' 8.0-8.7 s does not fit in the wav (8.500 s" in problems
    assert f"{csvs[2].name}: line 1: header" in problems
    assert f"{csvs[3].name}: line" in problems and "0 <= start < end" in problems
    assert "class names hold a comma or a line break: ['a,b']" in problems
    assert len(info.value.problems) == 5
    with pytest.raises(TaskError, match="not in --classes"):
        read_dataset(events_src, "events", classes=["alarm", "engine"])


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (
            {"segment_seconds": 0.25},
            r"--segment-seconds must be a multiple of 0.1 s \(100-ms frames\) in \(0, 3600\]",
        ),
        ({"sample_rates": (RATE, RATE)}, "--sample-rates must be distinct"),
        ({"name": "../x"}, "--name '../x' must be"),
        ({"tasks": ()}, "--tasks must name"),
    ],
)
def test_bad_options_are_refused(frames_src, tmp_path, options, message):
    with pytest.raises(seld.SeldError, match=message):
        seld.prepare(frames_src, tmp_path, seld.Options(layout="frames", **{**OPTIONS, **options}))


# --- splits ----------------------------------------------------------------------------------


def test_fold_splits(frames_src):
    dataset = read_dataset(frames_src, "frames")
    of = lambda spec: assign_splits(dataset, spec).of  # noqa: E731
    by_fold = {r.identity: r.fold for r in dataset.recordings}
    explicit = of(["train=fold1", "valid=fold2", "test=fold3"])
    assert {r: {1: "train", 2: "valid", 3: "test"}[f] for r, f in by_fold.items()} == explicit
    kfold = assign_splits(dataset, ["kfold"])
    assert kfold.mode == "presplit_kfold" and kfold.names == ["fold00", "fold01", "fold02"]
    assert kfold.members == {"fold00": ["fold1"], "fold01": ["fold2"], "fold02": ["fold3"]}
    percent = assign_splits(dataset, ["train=dev-train", "valid=50%", "test=dev-test"])
    assert sorted(percent.of.values()) == ["test", "train", "valid"] and len(percent.left_out) == 1
    for spec, message in [
        (["train=fold9", "valid=fold2", "test=fold3"], "'fold9' selects no recording"),
        (["train=fold1", "valid=fold2"], "['test'] missing"),
        (["train=fold1", "valid=fold1", "test=fold3"], "is in both train and valid"),
        (["train=fold1", "valid=100%", "test=fold3"], "percentage in (0, 100)"),
        (["test"], "is not SPLIT=SELECTORS"),
    ]:
        with pytest.raises(
            TaskError,
            match=message.replace("(", r"\(")
            .replace(")", r"\)")
            .replace("[", r"\[")
            .replace("]", r"\]"),
        ):  # noqa: E501
            assign_splits(dataset, spec)


def _fake(subsets_and_folds: list[tuple[str, int | None]]) -> Dataset:
    recordings = [
        Recording(
            f"{s}/r{i}" if s else f"r{i}",
            f"r{i}",
            s,
            f,
            Path(f"r{i}.wav"),
            RATE,
            RATE,
            "PCM_16",
            (),
            (),
        )
        for i, (s, f) in enumerate(subsets_and_folds)
    ]
    return Dataset(
        Path("fake"), "frames", "foa_dev", "metadata_dev", ("a",), False, RATE, False, recordings
    )


def test_default_splits_follow_the_dataset():
    starss = _fake(
        [("dev-train-sony", 3)] * 6 + [("dev-train-tau", 3)] * 4 + [("dev-test-sony", 4)] * 3
    )
    splits = assign_splits(starss, None)
    assert splits.mode == "trainvaltest"
    assert splits.members == {
        "train": ["dev-train-sony", "dev-train-tau"],
        "valid": ["20% of train"],
        "test": ["dev-test-sony"],
    }
    assert sorted(splits.of.values()).count("valid") == 2  # 20 % of 10 training recordings
    assert all(splits.of[r.identity] == "test" for r in starss.recordings if "test" in r.subset)
    nigens2020 = assign_splits(_fake([("", f) for f in (1, 2, 3, 4, 5, 6)]), None)
    assert nigens2020.mode == "presplit_kfold" and len(nigens2020.names) == 6
    with pytest.raises(TaskError, match="at least 3"):
        assign_splits(_fake([("", 1), ("", 2)]), None)
    with pytest.raises(TaskError, match="not named train"):
        assign_splits(_fake([("dev-train", 1), ("other", 2), ("dev-test", 3)]), None)


# --- HEAR tools ------------------------------------------------------------------------------


def test_seld_commands_have_help(capsys):
    for command in ("seld", "seld-synth"):
        with pytest.raises(SystemExit) as exit_info:
            main([command, "--help"])
        assert exit_info.value.code == 0
    assert "--channel-order" in capsys.readouterr().out


@pytest.mark.slow
def test_heareval_embeds_the_three_tasks(events_out, tmp_path, bin_dir):
    """heareval's embeddings runner reads all three tasks as they are (log-mel baseline)."""
    embeddings = tmp_path / "embeddings"
    command = [
        str(bin_dir / "python"), "-m", "heareval.embeddings.runner",
        "natheear_tasks.baselines.logmel",
        "--tasks-dir", str(events_out), "--embeddings-dir", str(embeddings),
        "--model-options", json.dumps({"sample_rate": RATE}),
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    root = next(embeddings.iterdir())
    for task in ("toyevents-events", "toyevents-localization", "toyevents-seld"):
        assert (root / task / ".done.embeddings").exists(), task
    stored = pickle.loads(
        (root / "toyevents-localization" / "fold00.target-labels.pkl").read_bytes()
    )
    ours = json.loads((events_out / "toyevents-localization" / "fold00.json").read_text())
    assert sorted(map(tuple, stored)) == sorted(map(tuple, ours.values()))
