"""The benchmark scripts run end to end at a tiny size and print their figures.

They are not tests of speed (their figures are not checked); these runs keep them working
as the code they call changes.
"""

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]


def _run(script: str, *args: str) -> str:
    result = subprocess.run(
        [sys.executable, str(ROOT / "bench" / script), *args],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def _rows(stdout: str, first: str) -> list[list[str]]:
    return [line.split() for line in stdout.splitlines() if line.split()[:1] == [first]]


def test_embed_throughput():
    out = _run("embed_throughput.py", "--clips", "1", "--repeats", "1", "--minutes", "0.2")
    (ratio,) = [line.split()[2] for line in out.splitlines() if line.startswith("fp32 ratio")]
    assert float(ratio.rstrip("%")) > 0
    assert "bf16 cosine to fp32" in out and "peak RSS" in out


def test_natheear_throughput(tmp_path):
    out = _run(
        "natheear_throughput.py", "--clips", "6", "--seconds", "0.5", "--bank-scenes", "2",
        "--work", str(tmp_path),
    )  # fmt: skip
    for fmt in ("binaural", "ambisonics"):
        rows = _rows(out, fmt)  # 16 and 48 kHz, 1 and 2 workers
        assert [row[1:3] for row in rows] == [[r, w] for r in ("16000", "48000") for w in "12"]
        assert all(float(row[-2].rstrip("x")) > 0 for row in rows)  # the ceiling
    assert not any(tmp_path.iterdir())  # its temporary tasks are removed


def test_train_throughput():
    out = _run("train_throughput.py", "--configs", "toy", "--device", "cpu", "--steps", "1",
               "--repeats", "1")  # fmt: skip
    (row,) = _rows(out, "toy")
    assert float(row[6]) > 0  # the ratio to the ceiling


def test_cat_convergence(tmp_path):
    png = tmp_path / "curves.png"
    out = _run(
        "cat_convergence.py", "--steps", "2", "--eval-every", "2", "--clips", "4",
        "--train-scenes", "2", "--probe-scenes", "8", "--png", str(png),
    )  # fmt: skip
    for model in ("GRAM", "CAT"):
        assert {row.split()[-4] for row in out.splitlines() if row.startswith(model)} >= {"0", "2"}
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_natheear_validation(tmp_path):
    out = _run(
        "natheear_validation.py", "--clips", "6", "--seconds", "0.5", "--repeats", "1",
        "--work", str(tmp_path),
    )  # fmt: skip
    rows = {row[0]: row for row in (line.split() for line in out.splitlines()) if len(row) == 4}
    assert float(rows["PCM_16"][1]) > 0 and float(rows["FLOAT"][1]) > 0  # MB
    assert float(rows["PCM_16"][2]) >= 0 and float(rows["FLOAT"][2]) >= 0  # seconds
    assert not any(tmp_path.iterdir())  # its temporary tasks are removed


def test_seld_score_speed():
    out = _run("seld_score_speed.py", "--files", "2", "--minutes", "0.5")
    (seconds,) = [line.split()[3] for line in out.splitlines() if line.startswith("read + score")]
    assert float(seconds) > 0 and "SELD" in out


def test_seld_throughput(tmp_path):
    out = _run(
        "seld_throughput.py", "--recordings", "3", "--seconds", "5", "--rates", "16000",
        "--work", str(tmp_path),
    )  # fmt: skip
    rows = _rows(out, "16000")
    assert [row[1] for row in rows] == ["1", "2"]
    assert all(float(row[6].rstrip("x")) > 0 for row in rows)
    assert "peak RSS" in out and not any(tmp_path.iterdir())


def test_determinism():
    out = _run("determinism.py", "--quick", "--parts", "embeddings", "probe", "step")
    assert "gram-binaural        2 x 1.0 s  scene True  timestamp True" in out
    assert "logmel baseline      2 x 3.0 s  scene True" in out
    assert "per-clip errors equal" in out and "features equal True; loss equal True" in out
