"""heareval's runners as natheear_tasks starts them: the predictions runner on scene, event
and k-fold tasks (torch >= 2.6 checkpoint loading, the Lightning epoch fix) and the
embeddings runner's torch-GPU-without-TensorFlow guard."""

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from natheear_helpers import write_task

pytestmark = pytest.mark.slow

FOLDS = ("fold00", "fold01", "fold02")


def _run(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, *args], cwd=cwd, capture_output=True, text=True, timeout=600
    )


def test_patched_predictions_runner_scores_scene_event_and_kfold_tasks(tmp_path):
    tasks = tmp_path / "tasks"
    write_task(tasks, "scene", "scene", files_per_split=6, rates=(16000,))
    write_task(tasks, "event", "event", files_per_split=4, rates=(16000,), seconds=2.0)
    write_task(
        tasks,
        "kfold",
        "scene",
        FOLDS,
        files_per_split=4,
        rates=(16000,),
        split_mode="new_split_kfold",
    )
    embed = _run(
        [
            "-m",
            "natheear_tasks.evaluation.heareval_embed",
            "natheear_tasks.baselines.logmel",
            "--tasks-dir",
            str(tasks),
            "--embeddings-dir",
            str(tmp_path / "embeddings"),
            "--model-options",
            '{"sample_rate": 16000}',
        ],
        tmp_path,
    )
    assert embed.returncode == 0, embed.stdout[-3000:] + embed.stderr[-3000:]
    (root,) = (tmp_path / "embeddings").iterdir()  # <module>-<options>
    dirs = [root / name for name in ("scene", "event", "kfold")]
    predict = _run(
        ["-m", "natheear_tasks.evaluation.heareval_predict", *map(str, dirs), "--grid", "faster"]
        + ["--grid-points", "2"],
        tmp_path,
    )
    assert predict.returncode == 0, predict.stdout[-3000:] + predict.stderr[-3000:]
    scene, event, kfold = (json.loads((d / "test.predicted-scores.json").read_text()) for d in dirs)
    assert 0.0 <= scene["test"]["test_top1_acc"] <= 1.0
    assert scene["test"]["test_score"] == scene["test"]["test_top1_acc"]
    # The event test used the post-processing chosen at the best validation epoch.
    assert 0.0 <= event["test"]["test_event_onset_200ms_fms"] <= 1.0
    assert dict(event["postprocessing"]).keys() == {"median_filter_ms", "min_duration"}
    assert sorted(k for k in kfold if k.startswith("fold")) == list(FOLDS)
    assert "test_score_mean" in kfold["aggregated_scores"]
    for d in dirs:
        assert (d / "prediction-done.json").is_file()


def test_fix_test_epoch_makes_lightning_report_the_best_epoch(monkeypatch):
    import pytorch_lightning as pl
    from heareval.predictions import task_predictions as tp

    from natheear_tasks.evaluation import heareval_predict

    seen = []

    def original(embedding_path, grid_point, **kwargs):
        tp_trainer = grid_point.trainer
        tp_trainer.fit_loop.current_epoch = grid_point.epoch  # what heareval does
        seen.append(tp_trainer.current_epoch)

    monkeypatch.setattr(tp, "task_predictions_test", original)
    trainer = pl.Trainer(logger=False, enable_checkpointing=False, enable_progress_bar=False)
    grid_point = type("GridPoint", (), {"trainer": trainer, "epoch": 7})()
    original(embedding_path=None, grid_point=grid_point)
    assert seen == [0]  # heareval's own assignment does not reach trainer.current_epoch
    heareval_predict.fix_test_epoch()
    tp.task_predictions_test(embedding_path=None, grid_point=grid_point)
    assert seen == [0, 7]
    heareval_predict.fix_test_epoch()  # idempotent: not wrapped twice
    assert tp.task_predictions_test.__wrapped__ is original


def test_embeddings_runner_starts_when_only_torch_sees_a_gpu(tmp_path):
    script = textwrap.dedent(
        """
        import sys, types
        import torch
        torch.cuda.is_available = lambda: True  # as on a GPU machine with tensorflow-cpu
        nvml = types.ModuleType("pynvml")  # heareval measures GPU memory through NVML
        for name in ("nvmlInit", "nvmlDeviceGetHandleByIndex", "nvmlDeviceGetMemoryInfo",
                     "nvmlDeviceGetName"):
            setattr(nvml, name, lambda *args: None)
        nvml.NVMLError = RuntimeError
        sys.modules["pynvml"] = nvml
        try:
            import heareval.embeddings.runner
        except ValueError as error:
            print("plain import refused:", error)
        for name in [m for m in sys.modules if m.startswith("heareval.embeddings.runner")]:
            del sys.modules[name]
        from natheear_tasks.evaluation.heareval_embed import import_runner
        print("wrapper imported", import_runner().runner.name)
        """
    )
    result = _run(["-c", script], tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "plain import refused: GPUs not available in tensorflow" in result.stdout
    assert "wrapper imported runner" in result.stdout
    assert "torch sees a GPU and TensorFlow does not" in result.stderr
