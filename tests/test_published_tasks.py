"""``evaluate`` on task folders in the GRAM authors' published layout (RealSELD / NatHEAR
as published, read by listen-eval-kit), both protocols: an ``accdoa`` SELD task with
static events ``{label, start, end, direction: [azimuth, elevation]}``, files of any length
(``sample_duration: null``) and 20 label frames a second, and a localization task whose
prediction type is heareval's ``multiclass`` but whose labels are ``[x, y, z]`` (the kit
overrides the type with ``--localization``). Slow: heareval and a ViT-B run."""

import json

import numpy as np
import pytest
import soundfile as sf

from natheear_tasks.cli import main
from natheear_tasks.formats.dcase_frames import direction_xyz

RATE = 16000
pytestmark = pytest.mark.slow


def _foa(seconds: float, events: list, rng) -> np.ndarray:
    """``(T, 4)`` AmbiX: noise sources encoded as plane waves over faint noise."""
    audio = 0.001 * rng.standard_normal((int(seconds * RATE), 4))
    for _, start, end, azimuth, elevation in events:
        x, y, z = direction_xyz(azimuth, elevation)
        span = slice(int(start * RATE / 1000), int(end * RATE / 1000))
        audio[span] += np.outer(0.1 * rng.standard_normal(span.stop - span.start), [1, y, z, x])
    return audio


def write_published_tasks(root) -> None:
    rng = np.random.default_rng(0)
    seld, loc = root / "starss-like", root / "sc_reverb_noisy"
    labels, directions = {}, {}
    for split in ("train", "valid", "test"):
        (seld / str(RATE) / split).mkdir(parents=True)
        (loc / str(RATE) / split).mkdir(parents=True)
        labels[split], directions[split] = {}, {}
        for i in range(3):
            seconds = 2.0 + 0.5 * i  # any length
            events = [("ab"[i % 2], 200.0, 1400.0, float(rng.uniform(-180, 180)), 10.0),
                      ("b", 900.0, seconds * 1000, -60.0, -20.0)]  # fmt: skip
            name = f"{split}{i}.wav"
            sf.write(seld / str(RATE) / split / name, _foa(seconds, events, rng), RATE)
            labels[split][name] = [
                {"label": c, "start": s, "end": e, "direction": [a, el]}
                for c, s, e, a, el in events
            ]
            azimuth = float(rng.uniform(-180, 180))
            sf.write(loc / str(RATE) / split / name,
                     _foa(1.0, [("a", 0, 1000, azimuth, 0.0)], rng), RATE)  # fmt: skip
            directions[split][name] = [round(float(v), 6) for v in direction_xyz(azimuth, 0.0)]
    common = {"split_mode": "trainvaltest", "splits": ["train", "valid", "test"]}
    metadata = {
        **common, "task_name": "starss-like", "embedding_type": "event",
        "prediction_type": "accdoa", "sample_duration": None, "evaluation": ["SELD"],
        "scoring_params": {"doa_threshold": 20, "average": "macro"},
        "source_dynamics": "static", "_nb_label_frames_1s": 20,
        "evaluation_params": {"task_specific_param_grid": {"max_epochs": [3]}},
    }  # fmt: skip
    (seld / "task_metadata.json").write_text(json.dumps(metadata))
    (seld / "labelvocabulary.csv").write_text("idx,label\n0,a\n1,b\n")
    localization = {
        **common, "task_name": "sc_reverb_noisy", "embedding_type": "scene",
        "prediction_type": "multiclass", "sample_duration": 1.0,
        "evaluation": ["DOA", "MAE", "DOE"],
    }  # fmt: skip
    (loc / "task_metadata.json").write_text(json.dumps(localization))
    (loc / "labelvocabulary.csv").write_text("idx,label\n0,x\n1,y\n2,z\n")
    for split in labels:
        (seld / f"{split}.json").write_text(json.dumps(labels[split]))
        (loc / f"{split}.json").write_text(json.dumps(directions[split]))


@pytest.fixture(scope="module")
def tasks(tmp_path_factory):
    root = tmp_path_factory.mktemp("published") / "tasks"
    write_published_tasks(root)
    return root


def _evaluate(tasks, out, *extra) -> int:
    args = ["evaluate", "--module", "hear_gram.gram_ambisonics", "--model", "random"]
    args += ["--model-options", json.dumps({"sample_rate": RATE}), "--tasks-dir", str(tasks)]
    return main(args + ["--out", str(out), "--grid", "faster", "--grid-points", "1", *extra])


@pytest.mark.parametrize("protocol", ["natheear", "listen-eval-kit"])
def test_published_seld_and_localization_tasks_are_scored(tasks, tmp_path, protocol):
    out = tmp_path / protocol
    assert _evaluate(tasks, out, "--protocol", protocol) == 0
    summary = json.loads((out / "summary.json").read_text())
    routes = {t["name"]: (t["route"], t["metric"]) for t in summary["tasks"]}
    assert routes == {
        "starss-like": ("seld", "seld_score"),
        "sc_reverb_noisy": ("localization", "mean_doa_error_deg"),  # the kit's DOA / MAE
    }
    seld = summary["scores"]["random"]["starss-like"]
    for metric in ("ER20", "F20", "LE_CD", "LR_CD"):
        low, high = seld[f"{metric}_ci95"]
        assert low <= seld[metric] <= high, metric
    low, high = seld["ci95"]
    assert low <= seld["score"] <= high and seld["items"] == 3
    local = summary["scores"]["random"]["sc_reverb_noisy"]
    assert 0 <= local["mean"] <= 180 and local["ci95"][0] <= local["score"] <= local["ci95"][1]
    probe = next(out.glob("runs/random/embeddings/*/starss-like/test.seld-scores.json"))
    scored = json.loads(probe.read_text())
    if protocol == "listen-eval-kit":
        assert scored["protocol"] == "listen-eval-kit" and scored["steps_per_block"] == 12
        assert set(local["listen_eval_kit"]) == {"DOA", "MAE", "DOE"}
        assert local["listen_eval_kit"]["MAE"] == pytest.approx(local["mean"], abs=1e-3)
        assert summary["settings"]["protocol"] == "listen-eval-kit"
    else:
        assert "protocol" not in scored and scored["scoring"]["label_frame_ms"] == 50.0
        assert "listen_eval_kit" not in local


def test_fields_the_package_does_not_understand_are_listed_before_any_model_runs(
    tasks, tmp_path, capsys
):
    bad = tmp_path / "tasks"
    write_published_tasks(bad)
    metadata = json.loads((bad / "starss-like" / "task_metadata.json").read_text())
    metadata.update(prediction_type="multi-event-accdoa",
                    scoring_params={"azimuth_limits": [-180, 180]})  # fmt: skip
    (bad / "starss-like" / "task_metadata.json").write_text(json.dumps(metadata))
    assert _evaluate(bad, tmp_path / "out") == 2
    error = capsys.readouterr().err
    assert "starss-like: task_metadata.json: prediction_type 'multi-event-accdoa'" in error
    assert not (tmp_path / "out" / "runs").exists()
