"""The README's main job (``natheear-tasks demo``) end to end at a tiny scale, offline."""

import json

import pytest

from natheear_tasks.cli import main


@pytest.mark.slow
def test_demo_runs_offline_and_prints_the_table(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    out = tmp_path / "demo"
    args = ["demo", "--out", str(out), "--scale", "0.1", "--bank-size", "4"]
    args += ["--train-steps", "4", "--grid", "faster", "--grid-points", "1"]
    assert main(args) == 0  # the released weights cannot be had offline: not a failure
    printed = capsys.readouterr().out
    summary = json.loads((out / "results" / "summary.json").read_text())
    assert [t["name"] for t in summary["tasks"]] == [
        "synth_env_events-binaural",
        "synth_env_scenes-binaural",
        "synth_env_scenes-localization-binaural",
        "synth_speech_commands-binaural",
        "synth_speech_commands-localization-binaural",
    ]
    status = {m["label"]: m["status"] for m in summary["models"]}
    assert status == {
        "gram-trained": "ok",
        "gram-untrained": "ok",
        "logmel": "ok",
        "gram-released": "unavailable",
    }
    for label in ("gram-trained", "gram-untrained", "logmel"):
        assert len(summary["scores"][label]) == 5
    trained = json.loads((out / "models" / "gram-trained" / "config.json").read_text())
    untrained = json.loads((out / "models" / "gram-untrained" / "config.json").read_text())
    assert trained["encoder"] == untrained["encoder"] and trained["metadata"]["step"] == 4
    assert trained["variant"] == "gram-binaural-time"
    # Each split's clips were placed in scenes of that split's own RIR bank.
    metadata = json.loads(
        (out / "tasks" / "synth_env_scenes-binaural" / "task_metadata.json").read_text()
    )
    banks = metadata["natheear"]["rir_bank"]
    assert sorted(banks) == ["test", "train", "valid"]
    assert len({json.dumps(bank, sort_keys=True) for bank in banks.values()}) == 3
    # The learning curve: the intermediate checkpoints were evaluated and drawn.
    curve = json.loads((out / "results" / "curve" / "summary.json").read_text())
    assert [m["label"] for m in curve["models"]] == ["gram-step-2"]
    assert (out / "results" / "learning_curve.png").read_bytes()[:4] == b"\x89PNG"
    table = (out / "results" / "summary.md").read_text()
    assert table.splitlines()[0] in printed and "gram-released: unavailable" in printed
    # A second run finds every stage done and only reprints the table.
    assert main(args) == 0
    assert "embeddings of" not in capsys.readouterr().out


def test_demo_outside_a_checkout_refuses_before_the_first_stage(tmp_path, monkeypatch, capsys):
    # Installed from a wheel, natheear_tasks has no `training/` beside it: the demo must
    # say so at once, not after minutes of synthesis, RIR banks and conversion.
    from natheear_tasks.demo import job

    monkeypatch.setattr(job, "PACKAGE_ROOT", tmp_path / "site-packages")
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--scale", "0.1", "--bank-size", "4"]) == 2
    error = capsys.readouterr().err
    assert "run it from a checkout" in error and "training" in error
    assert not out.exists()


def test_the_untrained_twin_holds_the_pretraining_runs_initial_weights(tmp_path):
    # The twin must be the trained model's own starting point (training.pretrain seeds
    # torch with train.seed, then builds the encoder first), so that the learning curve's
    # step 0 is the run's step 0 and trained-versus-untrained isolates pretraining.
    import torch

    from hear_gram.checkpoint import load_encoder, save_checkpoint
    from natheear_tasks.demo import job
    from training import config as configuration
    from training.mae import build_model, encoder_args

    cfg = configuration.load(
        job.PACKAGE_ROOT / job.CONFIG, ["train.seed=7", "data.train=clips.txt", "scenes.rirs=bank"]
    )
    torch.manual_seed(cfg.train.seed)
    initial = build_model(cfg.model).encoder.state_dict()
    trained = build_model(cfg.model).encoder  # other weights, as after training
    metadata = {"training_config": configuration.to_dict(cfg)}
    args = encoder_args(cfg.model)
    folder = save_checkpoint(tmp_path / "trained", trained, cfg.model.variant, args, metadata)
    twin, _ = load_encoder(str(job.write_untrained(folder, tmp_path / "twin")), cfg.model.variant)
    state = twin.state_dict()
    assert state.keys() == initial.keys()
    assert all(torch.equal(state[k], initial[k]) for k in initial)
    assert not torch.equal(
        trained.state_dict()["patch_embed.proj.weight"], state["patch_embed.proj.weight"]
    )


def test_the_learning_curve_points_carry_bootstrap_intervals_and_the_png_is_written(tmp_path):
    import numpy as np

    from natheear_tasks.demo import curve

    rng = np.random.default_rng(1)
    few, many = list(rng.uniform(0, 180, 50)), list(rng.uniform(0, 180, 800))
    mean, low, high = curve.mean_interval(few)
    assert low < mean < high and mean == pytest.approx(np.mean(few))
    assert curve.mean_interval(few) == (mean, low, high)  # seeded
    _, low_many, high_many = curve.mean_interval(many)
    assert high_many - low_many < (high - low) / 2  # 16x the clips: about 1/4 the width
    with pytest.raises(ValueError, match="no errors"):
        curve.mean_interval([])
    curves, references = {"task": {0: few, 1000: many}}, {"task": {"log-mel": many}}
    png = curve.plot(curves, references, tmp_path / "c.png")
    assert png.read_bytes()[:4] == b"\x89PNG"


def test_a_split_view_refuses_names_that_leave_the_split_folder(tmp_path):
    from natheear_tasks.demo import job

    source = tmp_path / "task"
    (source / "16000" / "test").mkdir(parents=True)
    (tmp_path / "outside.wav").write_bytes(b"RIFF")
    (source / "task_metadata.json").write_text(json.dumps({"splits": ["test"]}))
    (source / "test.json").write_text(json.dumps({"../../outside.wav": []}))
    with pytest.raises(job.DemoError, match="outside test/"):
        job.split_view(source, "test", tmp_path / "view")
    assert not (tmp_path / "view").exists()
