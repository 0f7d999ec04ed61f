"""``natheear-tasks evaluate`` on a SELD task, issue 11's done-when: a simulated dataset
(``seld-synth``: 3 recordings of 4 s at 16 kHz) converted by ``seld`` (1-s chunks),
scored with an untrained GRAM-Ambisonics; the SELD metrics, their intervals and s(m) in
the report, resume (about 20 s on 2 shared cores; slow: it runs heareval and a ViT-B); the
same scores with 1 and 2 threads (two more runs)."""

import json

import pytest
from thread_runs import summaries_with_1_and_2_threads

from natheear_tasks.cli import main

OPTIONS = json.dumps({"sample_rate": 16000})
PARTS = ("ER20", "F20", "LE_CD", "LR_CD")


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = tmp_path_factory.mktemp("seld-evaluate")
    synth = ["seld-synth", str(root / "toy"), "--layout", "frames", "--files", "3"]
    assert main(synth + ["--seconds", "4", "--sample-rate", "16000"]) == 0
    convert = ["seld", str(root / "toy"), str(root / "tasks"), "--layout", "frames"]
    convert += ["--tasks", "seld", "--sample-rates", "16000", "--segment-seconds", "1"]
    assert main(convert) == 0
    references = {"best": "perfect", "tasks": {"toy-seld": {"baseline": 5.0}}}
    (root / "refs.json").write_text(json.dumps(references))
    return root


def _arguments(root, out) -> list[str]:
    args = ["evaluate", "--module", "hear_gram.gram_ambisonics", "--model", "random"]
    args += ["--model-options", OPTIONS, "--tasks-dir", str(root / "tasks"), "--out", str(out)]
    args += ["--grid", "faster", "--grid-points", "1"]
    return args + ["--references", str(root / "refs.json")]


@pytest.mark.slow
def test_evaluate_reports_the_seld_metrics_of_an_untrained_gram(root, capsys):
    out = root / "results"
    assert main(_arguments(root, out)) == 0
    printed = capsys.readouterr().out
    summary = json.loads((out / "summary.json").read_text())
    assert summary["tasks"] == [
        {
            "name": "toy-seld",
            "embedding_type": "event",
            "prediction_type": "accdoa",
            "route": "seld",
            "metric": "seld_score",
            "higher_is_better": False,
        }
    ]
    entry = summary["scores"]["random"]["toy-seld"]
    probe_file = next((out / "runs" / "random").glob("embeddings/*/toy-seld/test.seld-scores.json"))
    probe = json.loads(probe_file.read_text())
    assert entry["score"] == probe["test"]["seld_score"]
    assert {k: entry[k] for k in PARTS} == {k: probe["test"][k] for k in PARTS}
    assert entry["score"] == pytest.approx(
        (entry["ER20"] + 1 - entry["F20"] + entry["LE_CD"] / 180 + 1 - entry["LR_CD"]) / 4
    )
    assert entry["ER20"] >= 0 and 0 <= entry["LE_CD"] <= 180
    assert 0 <= entry["F20"] <= 1 and 0 <= entry["LR_CD"] <= 1
    for field, key in [("score", "ci95")] + [(k, f"{k}_ci95") for k in PARTS]:
        low, high = entry[key]
        assert low <= entry[field] <= high, field
    assert (entry["ci95_method"], entry["items"]) == ("bootstrap-files", 4)
    s_m = summary["s_m"]["models"]["random"]
    assert s_m["s_m"] == pytest.approx(100 * min(1.0, max(0.0, (5.0 - entry["score"]) / 5.0)))
    assert s_m["ci95"][0] <= s_m["s_m"] <= s_m["ci95"][1] and s_m["resamples"] > 900
    table = (out / "summary.md").read_text()
    assert table in printed
    assert "| toy-seld | SELD score ↓ (ER20 ↓ / F20 ↑ / LE_CD ↓ / LR_CD ↑) | " in table
    assert "event and SELD tasks: bootstrap over test files (1000 resamples)" in table
    assert (out / "scores.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    record = json.loads((out / "runs" / "random" / "model.json").read_text())
    assert record["module"] == "hear_gram.gram_ambisonics" and record["grid"] == "faster"
    # A second run finds the task scored: nothing is embedded or trained again.
    log = out / "runs" / "random" / "embeddings.log"
    before, scored_at = log.read_text(), probe_file.stat().st_mtime_ns
    assert main(_arguments(root, out)) == 0
    assert log.read_text() == before and probe_file.stat().st_mtime_ns == scored_at
    assert json.loads((out / "summary.json").read_text())["scores"] == summary["scores"]


@pytest.mark.slow
def test_seld_scores_are_the_same_with_1_and_2_threads(root):
    one, two = summaries_with_1_and_2_threads(lambda out: _arguments(root, out), root)
    assert one["scores"] == two["scores"] and one["s_m"] == two["s_m"]
    assert one["scores"]["random"]["toy-seld"]["LE_CD_ci95"] is not None
