"""scripts/kit_interop.py, without the kit (it is not on PyPI): the task folders it hands to
listen-eval-kit are the ones it names, and bad usage is refused before anything is written."""

import importlib.util
import json
import os
from pathlib import Path

import pytest

from natheear_tasks import locks

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("kit_interop", ROOT / "scripts" / "kit_interop.py")
kit_interop = importlib.util.module_from_spec(spec)
spec.loader.exec_module(kit_interop)


def test_the_tasks_the_kit_gets_are_written_in_the_published_form(tmp_path):
    env = {**os.environ, "NATHEEAR_CACHE": str(tmp_path / "cache")}
    kit_interop.write_tasks(tmp_path, env)
    kinds = {}
    for task, module, localization in kit_interop.TASKS:
        metadata = json.loads((tmp_path / task / "task_metadata.json").read_text())
        assert (tmp_path / task / str(kit_interop.RATE) / "test").is_dir()
        kinds[Path(task).name] = (metadata["embedding_type"], metadata["prediction_type"])
        assert localization == ("cartesian-regression" if "localization" in task else "")
        assert module.startswith("hear_gram.gram_")
    assert kinds == {
        "toy-seld": ("event", "accdoa"),
        "toy-localization": ("scene", "cartesian-regression"),
        "tones-binaural": ("scene", "multiclass"),
        "tones-localization-binaural": ("scene", "cartesian-regression"),
    }


def test_no_kit_a_used_work_folder_or_one_in_use_is_refused(tmp_path, capsys):
    assert kit_interop.main([str(tmp_path / "nokit"), str(tmp_path / "work")]) == 2
    assert "is not a checkout of listen-eval-kit" in capsys.readouterr().err
    assert not (tmp_path / "work").exists()
    kit = tmp_path / "kit" / "heareval" / "predictions"
    kit.mkdir(parents=True)
    (kit / "runner.py").write_text("")
    (tmp_path / "used").mkdir()
    (tmp_path / "used" / "keep.txt").write_text("mine")
    assert kit_interop.main([str(tmp_path / "kit"), str(tmp_path / "used")]) == 2
    assert "is not empty" in capsys.readouterr().err
    assert [p.name for p in (tmp_path / "used").iterdir()] == ["keep.txt"]
    fd = locks.acquire(locks.beside(tmp_path / "busy"), "busy")
    try:
        assert kit_interop.main([str(tmp_path / "kit"), str(tmp_path / "busy")]) == 2
        assert f"is in use by pid {os.getpid()}" in capsys.readouterr().err
        assert not (tmp_path / "busy").exists()
    finally:
        locks.release(fd)
