"""s(m) arithmetic and references files, checked against hand-worked numbers."""

import json

import numpy as np
import pytest

from natheear_tasks.evaluation import scoring
from natheear_tasks.evaluation.scoring import ReferenceError, References, normalized_score

METRICS = {"words": "top1_acc", "where": "mean_doa_error_deg", "when": "segment_1s_er"}


def test_normalized_score_higher_and_lower_is_better():
    assert normalized_score(0.8, baseline=0.5, best=1.0) == pytest.approx(0.6)
    # DoA error: baseline 90°, best 10°; 30° is three quarters of the way.
    assert normalized_score(30.0, baseline=90.0, best=10.0) == pytest.approx(0.75)
    assert normalized_score(0.4, baseline=0.5, best=1.0) == 0.0  # below the baseline
    assert normalized_score(120.0, baseline=90.0, best=10.0) == 0.0
    assert normalized_score(5.0, baseline=90.0, best=10.0) == 1.0  # better than the best
    with pytest.raises(ValueError, match="no range"):
        normalized_score(0.5, baseline=0.7, best=0.7)


def test_s_m_hand_worked():
    # "base" is the baseline model for every task and best is the perfect score, except
    # "when" whose numbers are given: baseline error rate 0.9, best 0.3.
    refs = References(
        {"baseline": "base", "best": "perfect"}, {"when": {"baseline": 0.9, "best": 0.3}}, "x"
    )
    scores = {
        "base": {"words": 0.5, "where": 80.0, "when": 0.8},
        "model": {"words": 0.75, "where": 20.0, "when": 0.45},
    }
    result = scoring.s_m(refs, METRICS, scores)
    assert result["references"] == {
        "words": [0.5, 1.0],
        "where": [80.0, 0.0],
        "when": [0.9, 0.3],
    }
    model = result["models"]["model"]
    # words (0.75-0.5)/(1-0.5) = 0.5; where (20-80)/(0-80) = 0.75; when (0.45-0.9)/(0.3-0.9) = 0.75
    assert model["normalized"] == pytest.approx({"words": 0.5, "where": 0.75, "when": 0.75})
    assert model["s_m"] == pytest.approx(100 * 2.0 / 3)
    base = result["models"]["base"]
    # The baseline scores 0 where it is the baseline; on "when" (0.8-0.9)/(0.3-0.9) = 1/6.
    assert base["s_m"] == pytest.approx(100 * (1 / 6) / 3)


def test_s_m_skips_tasks_without_reference_and_flags_missing_scores():
    refs = References({}, {"words": {"baseline": 0.1, "best": 0.9}}, "x")
    scores = {"a": {"words": 0.5, "where": 30.0}, "b": {"where": 10.0}}
    result = scoring.s_m(refs, {"words": "top1_acc", "where": "mean_doa_error_deg"}, scores)
    assert result["skipped"] == {"where": "no baseline given"}
    assert result["models"]["a"]["s_m"] == pytest.approx(50.0)
    assert result["models"]["b"]["s_m"] is None
    assert result["models"]["b"]["missing"] == ["words"]


def test_reference_direction_is_checked():
    with pytest.raises(ReferenceError, match="lower is better"):
        scoring.check_reference("mean_doa_error_deg", baseline=10.0, best=40.0, task="t")
    with pytest.raises(ReferenceError, match="higher is better"):
        scoring.check_reference("top1_acc", baseline=0.9, best=0.5, task="t")
    # A baseline model that already reaches the best tells nothing: skipped, not an error.
    refs = References({"baseline": "base", "best": "perfect"}, {}, "x")
    reason = scoring.resolve_reference(refs, "words", "top1_acc", {"base": {"words": 1.0}})
    assert reason == "the baseline (1) already reaches the best (1)"


def test_reference_errors_name_the_problem():
    refs = References({}, {"where": {"metric": "top1_acc", "baseline": 0, "best": 1}}, "f")
    with pytest.raises(ReferenceError, match="primary metric is mean_doa_error_deg"):
        scoring.resolve_reference(refs, "where", "mean_doa_error_deg", {})
    refs = References({"baseline": "nobody", "best": "perfect"}, {}, "f")
    reason = scoring.resolve_reference(refs, "words", "top1_acc", {"a": {}})
    assert reason == "baseline 'nobody' is not a model of this evaluation (['a'])"
    refs = References({"baseline": 0.0, "best": "perfect"}, {}, "f")
    reason = scoring.resolve_reference(refs, "x", "d_prime", {})
    assert "no perfect value" in reason


def test_load_references_json_and_csv_agree(tmp_path):
    as_json = tmp_path / "refs.json"
    as_json.write_text(
        json.dumps(
            {
                "baseline": "logmel",
                "best": "perfect",
                "tasks": {"where": {"metric": "mean_doa_error_deg", "baseline": 90, "best": 5}},
            }
        )
    )
    refs = scoring.load_references(as_json)
    assert refs.entry("where") == {"metric": "mean_doa_error_deg", "baseline": 90.0, "best": 5.0}
    assert refs.entry("words") == {"baseline": "logmel", "best": "perfect"}
    as_csv = tmp_path / "refs.csv"
    as_csv.write_text(
        "task,metric,baseline,best\nwhere,mean_doa_error_deg,90,5\nwords,,0.1,perfect\n"
    )
    refs = scoring.load_references(as_csv)
    assert refs.entry("where") == {"metric": "mean_doa_error_deg", "baseline": 90.0, "best": 5.0}
    assert refs.entry("words") == {"baseline": 0.1, "best": "perfect"}


@pytest.mark.parametrize(
    "content, message",
    [
        ("[1, 2]", "JSON object"),
        ('{"baseline": 1, "bset": 2}', "unknown fields"),
        ('{"tasks": {"a": {"baseline": true, "best": 1}}}', "expected a number"),
        ("{", "not valid JSON"),
    ],
)
def test_load_references_rejects_bad_files(tmp_path, content, message):
    path = tmp_path / "refs.json"
    path.write_text(content)
    with pytest.raises(ReferenceError, match=message):
        scoring.load_references(path)


def test_s_m_resampled_is_paired_with_the_baseline_model():
    # Two resamples. "base" is the baseline on both tasks; best is perfect (1 and 0°).
    refs = References({"baseline": "base", "best": "perfect"}, {}, "x")
    metrics = {"words": "top1_acc", "where": "mean_doa_error_deg"}
    resampled = {
        "base": {"words": np.array([0.5, 0.6]), "where": np.array([80.0, 90.0])},
        "model": {"words": np.array([0.75, 0.6]), "where": np.array([20.0, 100.0])},
    }
    out = scoring.s_m_resampled(refs, metrics, ["words", "where"], resampled)
    # Resample 0: words (0.75-0.5)/0.5 = 0.5, where (20-80)/(0-80) = 0.75 -> 62.5 %.
    # Resample 1: words 0 (equal to the baseline), where below the baseline -> 0.
    np.testing.assert_allclose(out["model"], [62.5, 0.0])
    np.testing.assert_allclose(out["base"], [0.0, 0.0])
    # A baseline model already at the best on a resample: that resample has no s(m).
    refs = References({"baseline": "base", "best": 0.6}, {}, "x")
    out = scoring.s_m_resampled(refs, {"words": "top1_acc"}, ["words"], resampled)
    assert out["model"][0] == 100.0 and np.isnan(out["model"][1])
    # A model without resamples of a task has no interval.
    del resampled["model"]["where"]
    assert scoring.s_m_resampled(refs, metrics, ["words", "where"], resampled)["model"] is None
