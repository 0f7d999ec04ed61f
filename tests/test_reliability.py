"""Reliability: no process outlives its command (SIGKILL, SIGTERM), two runs on one output
do not collide, killed runs leave no litter."""

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from hear_tasks import write_task

from natheear_tasks import locks
from natheear_tasks.cli import main

ROOT = Path(__file__).resolve().parents[1]
PARENT = (
    "import sys\n"
    "from natheear_tasks import children, exits\n"
    "children.handle_termination()\n"
    "sys.exit(exits.run_command(lambda: children.run(['sleep', '300']), (ValueError,)))\n"
)


def kill_test(test):
    """A test run once with SIGKILL and once with SIGTERM as ``how``, on Linux (/proc)."""
    linux = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
    return linux(pytest.mark.parametrize("how", [signal.SIGKILL, signal.SIGTERM])(test))


def descendants(pid: int) -> list[int]:
    """Every living process below ``pid`` (read from /proc)."""
    parents = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if fields[0] != "Z":
                parents.setdefault(int(fields[1]), []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        for child in parents.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def cmdline(pid: int) -> bytes:
    """``pid``'s command line, or nothing once it has ended."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def wait_for(condition, seconds: float) -> bool:
    deadline = time.time() + seconds
    while time.time() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return condition()


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def stop_and_check_nothing_survives(command: subprocess.Popen, how: int, output) -> None:
    """Send ``how`` to ``command``; it must end with that signal (143 for SIGTERM) and every
    process below it must end within 15 s. ``output()`` explains a wrong exit code."""
    below = descendants(command.pid)
    command.send_signal(how)
    code = command.wait(timeout=120)
    assert code == (-signal.SIGKILL if how == signal.SIGKILL else 143), output()
    assert wait_for(lambda: not any(alive(p) for p in below), 15), [
        cmdline(p) for p in below if alive(p)
    ]


@kill_test
def test_a_child_dies_with_its_command(how):
    parent = subprocess.Popen([sys.executable, "-c", PARENT], cwd=ROOT, env={**os.environ})
    try:
        assert wait_for(lambda: descendants(parent.pid), 20), "the child never started"
        (child,) = descendants(parent.pid)
        assert wait_for(lambda: b"sleep" in cmdline(child), 10)
        stop_and_check_nothing_survives(parent, how, lambda: "")
    finally:
        parent.kill()


@pytest.mark.slow
@kill_test
def test_killing_evaluate_leaves_no_heareval_process(tmp_path, how):
    tasks = tmp_path / "tasks"
    write_task(tasks, "tones", "scene", files_per_split=3)
    command = [sys.executable, "-m", "natheear_tasks", "evaluate", "--module",
               "natheear_tasks.baselines.logmel", "--model", "none", "--model-options",
               '{"sample_rate": 16000}', "--tasks-dir", str(tasks),
               "--out", str(tmp_path / "r")]  # fmt: skip
    evaluate = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert wait_for(lambda: descendants(evaluate.pid), 60), "no heareval child started"
        stop_and_check_nothing_survives(evaluate, how, evaluate.stderr.read)
    finally:
        evaluate.kill()


@pytest.mark.slow
@kill_test
def test_killing_the_demo_stops_its_pretraining(tmp_path, how):
    """The main job killed while its training.pretrain child trains: nothing keeps running."""
    command = [sys.executable, "-m", "natheear_tasks", "demo", "--out", str(tmp_path / "demo"),
               "--scale", "0.02", "--bank-size", "4", "--train-steps", "100000",
               "--workers", "1", "--no-released"]  # fmt: skip
    log = tmp_path / "demo.log"
    env = {**os.environ, "NATHEEAR_CACHE": str(tmp_path / "cache")}
    with log.open("w") as sink:
        demo = subprocess.Popen(command, cwd=ROOT, stdout=sink, stderr=sink, env=env)
    try:

        def training() -> list[int]:
            return [p for p in descendants(demo.pid) if b"training.pretrain" in cmdline(p)]

        assert wait_for(training, 240), log.read_text()[-2000:]
        assert wait_for(lambda: (tmp_path / "demo" / "train" / "run").is_dir(), 60)
        stop_and_check_nothing_survives(demo, how, lambda: log.read_text()[-2000:])
    finally:
        demo.kill()


def test_a_lock_file_removed_after_it_was_opened_is_not_trusted(tmp_path, monkeypatch):
    """Run B opens the lock file; run A ends (removes it, then unlocks) and run C takes a new
    one; B's flock on the removed file succeeds, but B must see C's lock, not run beside C."""
    lock = tmp_path / ".out.lock"
    first = locks.acquire(lock, "out")
    taken = []
    real_open = os.open

    def open_while_the_holder_changes(path, flags, mode=0o777):
        fd = real_open(path, flags, mode)
        if not taken:
            taken.append(fd)
            lock.unlink()
            locks.release(first)
            taken.append(locks.acquire(lock, "out"))
        return fd

    monkeypatch.setattr(locks.os, "open", open_while_the_holder_changes)
    with pytest.raises(locks.OutputInUse):
        locks.acquire(lock, "out")
    monkeypatch.undo()
    locks.release(taken[1])


def test_a_second_run_on_a_locked_output_names_the_holder_and_exits_2(
    tmp_path, capsys, monkeypatch
):
    """Each command's output lock, held here as a first run would hold it."""
    monkeypatch.setenv("NATHEEAR_CACHE", str(tmp_path / "cache"))
    tasks = tmp_path / "tasks"
    write_task(tasks, "tones", "scene", files_per_split=2)
    out = tmp_path / "results"
    fd = locks.acquire(out / ".evaluate.lock", str(out))
    try:
        args = ["evaluate", "--module", "natheear_tasks.baselines.logmel", "--model", "none",
                "--model-options", '{"sample_rate": 16000}', "--tasks-dir", str(tasks),
                "--out", str(out)]  # fmt: skip
        assert main(args) == 2
        error = capsys.readouterr().err
        assert f"{out} is in use by pid {os.getpid()}" in error
        assert not (out / "runs").exists()
    finally:
        locks.release(fd)
    data = _toy_dataset(tmp_path)
    fd = locks.acquire(tmp_path / "seld-out" / ".toy-seld.lock", "seld-out")
    try:
        seld = ["seld", str(data), str(tmp_path / "seld-out"), "--layout", "frames"]
        assert main([*seld, "--tasks", "seld"]) == 2
        assert "seld-out (toy tasks) is in use by pid" in capsys.readouterr().err
    finally:
        locks.release(fd)
    hear = write_task(tmp_path / "hear", "tones", "scene", files_per_split=2)
    natheear = tmp_path / "natheear"
    fd = locks.acquire(natheear / ".tones-ambisonics.lock", str(natheear / "tones-ambisonics"))
    try:
        assert main(["convert", str(hear), str(natheear), "--format", "ambisonics"]) == 2
        assert "tones-ambisonics is in use by pid" in capsys.readouterr().err
        assert sorted(p.name for p in natheear.iterdir()) == [".tones-ambisonics.lock"]
        assert not (tmp_path / "cache").exists()  # refused before simulating any RIR
    finally:
        locks.release(fd)
    oracle_out = tmp_path / "oracle"
    fd = locks.acquire(locks.beside(oracle_out), str(oracle_out))
    try:
        assert main(["seld-synth", str(oracle_out), "--layout", "frames", "--files", "2",
                     "--seconds", "4", "--sample-rate", "16000"]) == 2  # fmt: skip
        assert "is in use by pid" in capsys.readouterr().err
        assert not oracle_out.exists()
    finally:
        locks.release(fd)


def test_a_killed_atomic_run_leaves_nothing_a_rerun_keeps(tmp_path):
    """seld-synth (and seld-oracle, through the same atomic folder) SIGKILLed mid-write: its
    hidden staging folder stays beside OUT; the rerun removes it, then writes OUT."""
    out = tmp_path / "toy"
    stale = tmp_path / ".toy.k3j2l1"
    (stale / "foa_dev").mkdir(parents=True)
    (tmp_path / ".toy.lock").write_text(json.dumps({"pid": 1}))  # left unlocked by the kill
    assert main(["seld-synth", str(out), "--layout", "frames", "--files", "2", "--seconds",
                 "4", "--sample-rate", "16000"]) == 0  # fmt: skip
    assert sorted(p.name for p in tmp_path.iterdir()) == ["toy"]


@pytest.mark.parametrize(
    ("flag", "value", "match"),
    [
        ("--segment-seconds", "1e300", r"--segment-seconds must be .* in \(0, 3600\]"),
        ("--segment-seconds", "1000", "longer than the longest recording .4 s. and than"),
        ("--event-seconds", "inf", "--event-seconds must be a multiple of 0.1 s"),
    ],
)  # fmt: skip
def test_piece_lengths_are_bounded_before_anything_is_written(tmp_path, capsys, flag, value, match):
    data = tmp_path / "toy"
    assert main(["seld-synth", str(data), "--layout", "frames", "--files", "2", "--seconds", "4",
                 "--sample-rate", "16000"]) == 0  # fmt: skip
    out = tmp_path / "out"
    assert main(["seld", str(data), str(out), "--layout", "frames", flag, value]) == 2
    assert re.search(match, capsys.readouterr().err)
    assert not out.exists()


def _toy_dataset(tmp_path) -> Path:
    data = tmp_path / "toy"
    assert main(["seld-synth", str(data), "--layout", "frames", "--files", "3", "--seconds", "4",
                 "--sample-rate", "16000"]) == 0  # fmt: skip
    return data


def test_a_fifo_named_like_a_recording_is_refused_without_opening_it(tmp_path, capsys):
    data = _toy_dataset(tmp_path)
    wav = next((data / "foa_dev").rglob("*.wav"))
    wav.unlink()
    os.mkfifo(wav)  # opening it to read would block forever
    code = subprocess.run(
        [sys.executable, "-m", "natheear_tasks", "seld", str(data), str(tmp_path / "out"),
         "--layout", "frames"], cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert code.returncode == 2
    assert "is not a regular file (a FIFO, device or socket?)" in code.stderr


def test_a_wav_cut_short_is_named(tmp_path, capsys):
    """The header promises 4 s, the file holds 3.6 s: the wav is named, not the labels."""
    data = _toy_dataset(tmp_path)
    wav = next((data / "foa_dev").rglob("*.wav"))
    content = wav.read_bytes()
    wav.write_bytes(content[: len(content) - 16000 * 4 * 2 * 4 // 10])  # 0.4 s of PCM_16
    assert main(["seld", str(data), str(tmp_path / "out"), "--layout", "frames"]) == 2
    error = capsys.readouterr().err
    assert f"{wav.name} is cut short: its header declares 64000 frames but it holds 57600" in error


def test_byte_order_marks_and_upper_case_extensions(tmp_path, capsys):
    data = _toy_dataset(tmp_path)
    csv = next((data / "metadata_dev").rglob("*.csv"))
    csv.write_bytes(b"\xef\xbb\xbf" + csv.read_bytes())  # saved by a spreadsheet
    out = tmp_path / "out"
    assert main(["seld", str(data), str(out), "--layout", "frames", "--tasks", "seld"]) == 0
    csv.rename(csv.with_suffix(".CSV"))
    assert main(["seld", str(data), str(tmp_path / "o2"), "--layout", "frames"]) == 2
    assert "the extension must be lower-case .csv (rename it)" in capsys.readouterr().err


@pytest.fixture
def small_disk(tmp_path):
    """A 400-KiB tmpfs (needs the right to mount one: root, or skipped)."""
    folder = tmp_path / "small"
    folder.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=400k", "tmpfs", str(folder)],
                             capture_output=True)  # fmt: skip
    if mounted.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    yield folder
    subprocess.run(["umount", str(folder)], check=True)


def test_a_full_disk_names_the_file_the_room_and_the_rerun(tmp_path, small_disk):
    """seld checks the room it needs before writing (exit 2); a disk that fills during a
    run (seld-synth) ends it with the file, the room left and what a rerun does (exit 1),
    never a traceback, and leaves nothing of an all-or-nothing output."""
    data = _toy_dataset(tmp_path)
    run = subprocess.run(
        [sys.executable, "-m", "natheear_tasks", "seld", str(data), str(small_disk / "out"),
         "--layout", "frames", "--sample-rates", "16000", "--tasks", "seld"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert run.returncode == 2, run.stderr[-2000:]
    assert re.search(r"needs about \d+ MiB more .* its device has 0 MiB free", run.stderr)
    assert not (small_disk / "out").exists()
    synth = subprocess.run(
        [sys.executable, "-m", "natheear_tasks", "seld-synth", str(small_disk / "toy"),
         "--layout", "frames", "--files", "3", "--seconds", "4"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert synth.returncode == 1, synth.stderr[-2000:]
    assert "Traceback" not in synth.stderr
    (message,) = [line for line in synth.stderr.splitlines() if line.startswith("error:")]
    assert re.search(r"the disk is full \(\d+ MiB left of 0.0 GiB there\), writing "
                     rf"{small_disk}/\.toy\.", message)  # fmt: skip
    assert message.endswith("nothing was written; rerun the same command once there is room")
    assert not any(p.name.startswith((".toy", "toy")) for p in small_disk.iterdir())


def test_layout_errors_say_which_layout_was_read(tmp_path):
    import hear_gram

    model = hear_gram.load_model("random", sample_rate=16000)
    with pytest.raises(ValueError, match=r"read as \(batch, channels, samples\), channels first, "
                       r"since 1 < 2.*: 2 samples"):  # fmt: skip
        hear_gram.get_scene_embeddings(torch.zeros(1, 1, 2), model)
    with pytest.raises(ValueError, match=r"read as \(batch, samples, channels\), channels last, "
                       r"since 1 < 2.*: 2 samples"):  # fmt: skip
        hear_gram.get_scene_embeddings(torch.zeros(1, 2, 1), model)


def test_seld_score_reads_upper_case_csv_files(tmp_path, capsys):
    ref, pred = tmp_path / "ref", tmp_path / "pred"
    ref.mkdir()
    pred.mkdir()
    rows = "".join(f"{k},0,0,10.0,0.0\n" for k in range(12))
    (ref / "a.csv").write_text(rows)
    (pred / "a.CSV").write_text(rows)
    assert main(["seld-score", "--ref", str(ref), "--pred", str(pred)]) == 0
    assert "without a prediction" not in capsys.readouterr().out
    (pred / "a.csv").write_text(rows)
    assert main(["seld-score", "--ref", str(ref), "--pred", str(pred)]) == 2
    assert "one stem twice" in capsys.readouterr().err


@pytest.mark.parametrize("row", ["5,1000000000,0,10,0", "5,1000000,0,10,0", "inf,0,0,10,0",
                                 "5,0,99999999999999999999999,10,0"])  # fmt: skip
def test_huge_or_infinite_label_values_are_listed_rows(tmp_path, capsys, row):
    """A class index of a billion used to make seld and seld-oracle build a billion class
    names; a million wrote a 1,000,001-class task; inf and integers beyond int64 raised
    OverflowError. Each is now a bad row of its file, exit 2, before anything is written."""
    data = _toy_dataset(tmp_path)
    csv = next((data / "metadata_dev").rglob("*.csv"))
    csv.write_text(csv.read_text() + row + "\n")
    for name, out in (("seld", "out"), ("seld-oracle", "o")):
        command = [name, str(data), str(tmp_path / out), "--layout", "frames"]
        assert main(command) == 2
        error = capsys.readouterr().err
        assert f"{csv.name}: line " in error and "is not an integer in [0, " in error, error
        assert "Traceback" not in error
    assert sorted(p.name for p in tmp_path.iterdir()) == ["toy"]
