"""The README's main job (``natheear-tasks demo``) end to end at a tiny scale, offline."""

import json

import pytest

from natheear_tasks.cli import main

pytestmark = pytest.mark.slow


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
        "synth_speech_commands-binaural",
        "synth_speech_commands-localization-ambisonics",
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
    table = (out / "results" / "summary.md").read_text()
    assert table.splitlines()[0] in printed and "gram-released: unavailable" in printed
    # A second run finds every stage done and only reprints the table.
    assert main(args) == 0
    assert "embeddings of" not in capsys.readouterr().out
