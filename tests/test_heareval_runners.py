"""heareval's runners as natheear_tasks starts them: the predictions runner on scene, event
and k-fold tasks (torch >= 2.6 checkpoint loading, the Lightning epoch fix, seeds per probe,
one thread, per-clip test outputs that give heareval's scores) and the embeddings runner's
torch-GPU-without-TensorFlow guard, ``--model random`` and recorded row order."""

import json
import os
import random
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from source_tasks import write_task

from natheear_tasks.evaluation import discovery, heareval_embed, task_scores

pytestmark = pytest.mark.slow

FOLDS = ("fold00", "fold01", "fold02")


def _run(args: list[str], cwd: Path, threads: str | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    if threads is not None:
        env.update(OMP_NUM_THREADS=threads, MKL_NUM_THREADS=threads)
    return subprocess.run(
        [sys.executable, *args], cwd=cwd, capture_output=True, text=True, timeout=600, env=env
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
    # heareval stacks each split's embeddings in a shuffled order; the wrapper recorded it.
    order = json.loads((dirs[0] / "test.filenames.json").read_text())
    assert sorted(order) == sorted(json.loads((tasks / "scene" / "test.json").read_text()))
    shape = tuple(json.loads((dirs[0] / "test.embedding-dimensions.json").read_text()))
    stacked = np.memmap(dirs[0] / "test.embeddings.npy", np.float32, "r", shape=shape)
    for row, name in enumerate(order):
        assert np.array_equal(stacked[row], np.load(dirs[0] / "test" / f"{name}.embedding.npy"))
    twin = tmp_path / "twin" / root.name  # the same embeddings, scored with 2 threads
    shutil.copytree(root, twin)
    scored = {}
    for where, threads in ((root, "1"), (twin, "2")):
        predict = _run(
            ["-m", "natheear_tasks.evaluation.heareval_predict", "--grid", "faster"]
            + ["--grid-points", "2", *(str(where / d.name) for d in dirs)],
            tmp_path,
            threads,
        )
        assert predict.returncode == 0, predict.stdout[-3000:] + predict.stderr[-3000:]
        scored[threads] = {
            path.relative_to(where): path.read_text()
            for path in sorted(where.glob("*/*.test-outputs.json"))
        }
    # Probes seeded per task, model, fold and grid point, trained with one thread: the
    # same test outputs whatever the thread count.
    assert len(scored["1"]) == 1 + 1 + len(FOLDS)
    assert scored["1"] == scored["2"]
    scene, event, kfold = (json.loads((d / "test.predicted-scores.json").read_text()) for d in dirs)
    twins = [json.loads((twin / d.name / "test.predicted-scores.json").read_text()) for d in dirs]
    assert scene["test"]["test_loss"] == twins[0]["test"]["test_loss"]
    # The per-clip (per-file for events) statistics give heareval's own scores.
    for d, name, score in (
        (dirs[0], "scene", scene["test"]["test_score"]),
        (dirs[1], "event", event["test"]["test_score"]),
        (dirs[2], "kfold", kfold["aggregated_scores"]["test_score_mean"]),
    ):
        task = discovery.TaskInfo(
            name, tasks / name, json.loads((d / "task_metadata.json").read_text())
        )
        items = task_scores.heareval_items(task, d)
        assert items.value() == pytest.approx(score, rel=1e-12, abs=1e-12)
        assert len(items.names) == (
            4 * len(FOLDS) if name == "kfold" else 6 if name == "scene" else 4
        )
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


def test_file_order_replays_the_shuffle_without_touching_the_generator():
    rng = random.Random(0)
    rng.random()
    files = [f"{i}.wav" for i in range(20)]
    order = heareval_embed.file_order(rng, files)
    expected = list(files)
    rng.shuffle(expected)  # what heareval does next, from the same state
    assert order == expected != files


def test_embeddings_runner_accepts_random_weights(tmp_path, monkeypatch):
    import click

    runner = heareval_embed.import_runner().runner
    monkeypatch.chdir(tmp_path)
    with pytest.raises(click.BadParameter, match="does not exist"):
        runner.make_context("runner", ["hear_gram", "--model", "random"])
    heareval_embed.accept_random_model(runner)
    heareval_embed.accept_random_model(runner)  # idempotent
    context = runner.make_context("runner", ["hear_gram", "--model", "random"])
    assert context.params["model"] == "random"
    with pytest.raises(click.BadParameter, match="does not exist"):
        runner.make_context("runner", ["hear_gram", "--model", "no-such-weights"])


def test_probe_seeds_do_not_depend_on_what_ran_before(monkeypatch):
    import torch
    from heareval.predictions import task_predictions as tp

    from natheear_tasks.evaluation import heareval_predict

    seen = []

    def train(embedding_path, data_splits, conf, **kwargs):
        seen.append((conf["lr"], data_splits["test"][0], torch.randint(1 << 30, ()).item()))
        torch.rand(int(conf["lr"] * 1e4))  # draws as many numbers as its training would

    monkeypatch.setattr(tp, "task_predictions_train", train)
    monkeypatch.setattr(tp, "seed_everything", tp.seed_everything)
    heareval_predict.seed_probes(7, "model-a")
    path = Path("/embeddings/module/task")
    a, b = {"lr": 1e-3}, {"lr": 3.2e-3}
    for conf in (a, b, a):
        tp.task_predictions_train(embedding_path=path, data_splits={"test": ["fold00"]}, conf=conf)
    tp.task_predictions_train(embedding_path=path, data_splits={"test": ["fold01"]}, conf=a)
    first, second, again, other_fold = seen
    assert again == first  # the same grid point and fold: the same seed, whatever ran before
    assert len({first[2], second[2], other_fold[2]}) == 3
    heareval_predict.seed_probes(7, "model-b")  # another model: other seeds
    tp.task_predictions_train(embedding_path=path, data_splits={"test": ["fold00"]}, conf=a)
    assert seen[-1][2] != first[2]
    # The grid points are still chosen after seeding with the base seed, as heareval does.
    tp.seed_everything(42, workers=False)
    assert random.random() == random.Random(7).random()


def test_run_click_returns_the_runners_exit_code(capsys):
    import click

    @click.command()
    @click.argument("code", type=int)
    def command(code: int) -> None:
        if code == 9:
            raise SystemExit("a message, not a number")
        if code:
            raise click.exceptions.Exit(code)

    assert heareval_embed.run_click(command, ["0"], "prog") == 0
    assert heareval_embed.run_click(command, ["3"], "prog") == 3
    assert heareval_embed.run_click(command, ["9"], "prog") == 1
    assert heareval_embed.run_click(command, ["x"], "prog") == 2  # click's usage error
    assert "Usage: prog [OPTIONS] CODE" in capsys.readouterr().err
