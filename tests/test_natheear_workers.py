"""Worker processes of a real `natheear-tasks convert --workers 2`: they end when their
parent is SIGKILLed, and a killed worker ends the run with exit 1 and a one-line reason."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from source_tasks import write_task

pytestmark = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc")


def _stat(pid: int) -> tuple[str, int] | None:
    """``(state, parent pid)`` of a process, None once it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    fields = text[text.rindex(")") + 2 :].split()
    return fields[0], int(fields[1])


def _alive(pid: int) -> bool:
    stat = _stat(pid)
    return stat is not None and stat[0] != "Z"


def _children(pid: int) -> dict[int, str]:
    """The child processes of ``pid`` and their command lines."""
    children = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (stat := _stat(int(entry.name))) and stat[1] == pid:
            try:
                cmdline = (entry / "cmdline").read_bytes()
            except (FileNotFoundError, ProcessLookupError):
                continue
            children[int(entry.name)] = cmdline.decode(errors="replace")
    return children


@pytest.fixture(scope="module")
def slow_task(tmp_path_factory) -> tuple[Path, Path]:
    """A task and a bank of long RIRs that two workers convert in several seconds."""
    root = tmp_path_factory.mktemp("workers")
    src = write_task(root / "src", files_per_split=40, rates=(16000,), seconds=2.0)
    bank = root / "gram"
    bank.mkdir()
    rng = np.random.default_rng(0)
    decay = np.exp(-np.arange(64000) / 8000)
    for i in range(2):
        np.save(bank / f"s{i}.npy", (rng.standard_normal((2, 2, 64000)) * decay).astype("f4"))
    return src, bank


def _start_and_wait_for_a_converted_file(src: Path, bank: Path, out: Path):
    """Start the conversion; return it with its worker pids once a file is converted."""
    command = [sys.executable, "-m", "natheear_tasks", "convert", str(src), str(out)]
    command += ["--format", "binaural", "--rirs", str(bank), "--workers", "2"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    journal = out / "toy-scene-binaural.partial" / ".journal"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        try:
            if any(f.stat().st_size for f in journal.iterdir()):
                break
        except FileNotFoundError:
            pass
        time.sleep(0.02)
    assert process.poll() is None, "the conversion ended before the test could interrupt it"
    children = _children(process.pid)
    workers = [pid for pid, cmd in children.items() if "multiprocessing.spawn" in cmd]
    assert len(workers) == 2, children
    return process, children


def test_workers_and_resource_tracker_end_when_the_parent_is_killed(tmp_path, slow_task):
    process, children = _start_and_wait_for_a_converted_file(*slow_task, tmp_path / "out")
    assert any("resource_tracker" in cmd for cmd in children.values()), children
    try:
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)  # its output pipes stay open while a worker lives
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and any(_alive(pid) for pid in children):
            time.sleep(0.05)
        left = {pid: cmd for pid, cmd in children.items() if _alive(pid)}
        assert not left, f"still running 5 s after their parent was killed: {left}"
        assert not (tmp_path / "out" / "toy-scene-binaural").exists()
    finally:
        for pid in children:
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
        process.stdout.close()
        process.stderr.close()


def test_a_killed_worker_ends_the_run_with_a_one_line_reason(tmp_path, slow_task):
    process, children = _start_and_wait_for_a_converted_file(*slow_task, tmp_path / "out")
    worker = min(pid for pid, cmd in children.items() if "multiprocessing.spawn" in cmd)
    os.kill(worker, signal.SIGKILL)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 1
    assert "Traceback" not in err
    last = err.strip().splitlines()[-1]
    assert last.startswith("error: a worker process died") and "rerun" in last
