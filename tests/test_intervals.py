"""Confidence intervals: the per-item decompositions give heareval's own scores on the full
test set, counted rows give the scores of expanded resamples, and the bootstrap is seeded,
paired and within folds."""

import numpy as np
import pytest
import torch

from natheear_tasks.evaluation import intervals
from natheear_tasks.evaluation.intervals import ItemStats


def _expand(stats: np.ndarray, counts: np.ndarray) -> list[np.ndarray]:
    return [np.repeat(stats, count, axis=0) for count in counts]


def test_counted_mean_and_median_equal_the_expanded_resamples():
    rng = np.random.default_rng(0)
    values = rng.normal(50, 20, size=(31, 1))
    counts = intervals.resample_counts(["test"] * 31, seed=1, resamples=50)
    expanded = _expand(values, counts)
    np.testing.assert_allclose(
        intervals.fraction(values, counts), [e.mean() for e in expanded], rtol=1e-12
    )
    # torch.median is the lower middle value of an even count, as the DoA probe reports it.
    medians = [torch.median(torch.from_numpy(e[:, 0])).item() for e in expanded]
    assert intervals.lower_median(values, counts).tolist() == medians
    even = np.ones((1, 31), dtype=np.int64)
    even[0, 0] = 2  # 32 rows
    expected = torch.median(torch.from_numpy(_expand(values, even)[0][:, 0])).item()
    assert intervals.lower_median(values, even)[0] == expected


def test_resample_counts_are_seeded_and_stay_within_folds():
    folds = ["fold00"] * 5 + ["fold01"] * 7
    counts = intervals.resample_counts(folds, seed=3, resamples=200)
    assert counts.shape == (200, 12)
    assert (counts[:, :5].sum(axis=1) == 5).all() and (counts[:, 5:].sum(axis=1) == 7).all()
    assert np.array_equal(counts, intervals.resample_counts(folds, seed=3, resamples=200))
    assert not np.array_equal(counts, intervals.resample_counts(folds, seed=4, resamples=200))
    # Every item is drawn about as often as any other.
    assert abs(counts.mean() - 1.0) < 0.1


def test_item_stats_are_ordered_by_fold_and_name_so_models_pair():
    a = ItemStats("top1_acc", ["b", "a", "c"], [[1], [0], [1]], ["f1", "f0", "f0"])
    b = ItemStats("top1_acc", ["c", "b", "a"], [[0], [0], [0]], ["f0", "f1", "f0"])
    assert a.key == b.key == (("f0", "a"), ("f0", "c"), ("f1", "b"))
    assert a.stats[:, 0].tolist() == [0.0, 1.0, 1.0]
    with pytest.raises(ValueError, match="no per-item metric"):
        ItemStats("accuracy", ["a"], [[1]], ["f0"])


def test_kfold_score_is_the_mean_of_the_fold_scores():
    stats = [[1], [1], [0], [1], [0], [0], [0]]
    folds = ["f0"] * 4 + ["f1"] * 3
    names = list("abcdefg")
    assert ItemStats("top1_acc", names, stats, folds, fold_mean=True).value() == pytest.approx(
        (3 / 4 + 0 / 3) / 2
    )
    assert ItemStats("top1_acc", names, stats, folds).value() == pytest.approx(3 / 7)


def test_percentile_and_fold_intervals_hand_worked():
    values = np.arange(1001, dtype=np.float64)  # percentiles 2.5 and 97.5: 25 and 975
    assert intervals.percentile_interval(values) == pytest.approx([25.0, 975.0])
    assert intervals.percentile_interval(np.append(values, np.nan)) == pytest.approx([25, 975])
    assert intervals.percentile_interval(np.array([np.nan])) is None
    # Three folds 0.6, 0.7, 0.8: sd 0.1, t(0.975, 2) = 4.3027; half-width 0.1 * 4.3027 / sqrt 3
    low, high = intervals.fold_interval([0.6, 0.7, 0.8], center=0.7)
    assert high - 0.7 == pytest.approx(0.1 * 4.302653 / 3**0.5, rel=1e-5)
    assert 0.7 - low == pytest.approx(high - 0.7)
    with pytest.raises(ValueError, match="at least 2 folds"):
        intervals.fold_interval([0.5], 0.5)


@pytest.mark.slow
@pytest.mark.parametrize("metric", ["top1_acc", "chroma_acc", "mAP", "aucroc", "d_prime"])
def test_scene_statistics_give_heareval_scores(metric):
    from heareval.score import available_scores

    rng = np.random.default_rng(1)
    classes, n = 14, 60
    prediction = rng.random((n, classes)).astype(np.float32)
    if metric in ("top1_acc", "chroma_acc"):
        target = np.eye(classes, dtype=np.float32)[rng.integers(0, classes, n)]
    else:
        target = (rng.random((n, classes)) < 0.3).astype(np.float32)
    outputs = {"files": [f"{i}.wav" for i in range(n)], "prediction": prediction, "target": target}
    names, stats = intervals.scene_statistics(metric, outputs)
    items = ItemStats(metric, names, stats, ["test"] * n)
    labels = {str(i): i for i in range(classes)}
    expected = available_scores[metric](label_to_idx=labels)(prediction, target)
    assert items.value() == pytest.approx(expected, rel=1e-12)


def _events(rng: np.random.Generator, labels: list[str], count: int) -> list[dict]:
    starts = np.sort(rng.uniform(0, 9000, count))
    return [
        {
            "label": str(rng.choice(labels)),
            "start": float(s),
            "end": float(s + rng.uniform(50, 900)),
        }
        for s in starts
    ]


@pytest.mark.slow
@pytest.mark.parametrize(
    "metric", ["event_onset_200ms_fms", "event_onset_offset_50ms_20perc_fms", "segment_1s_er"]
)
def test_event_statistics_sum_to_heareval_scores(metric):
    from heareval.score import available_scores

    rng = np.random.default_rng(2)
    labels = ["dog", "bell", "speech"]
    targets = {f"{i}.wav": _events(rng, labels, int(rng.integers(0, 6))) for i in range(12)}
    # Predictions near the targets (some onsets within the collar, some not) plus extras.
    predicted = {
        name: [
            {**e, "start": e["start"] + rng.normal(0, 150), "end": e["end"] + rng.normal(0, 150)}
            for e in events
            if rng.random() < 0.8
        ]
        + _events(rng, labels, int(rng.integers(0, 3)))
        for name, events in targets.items()
    }
    outputs = {"predicted_events": predicted, "target_events": targets}
    names, stats = intervals.event_statistics(metric, outputs, labels)
    assert names == sorted(targets)
    items = ItemStats(metric, names, stats, ["test"] * len(names))
    scorer = available_scores[metric](label_to_idx={label: i for i, label in enumerate(labels)})
    expected = scorer(predicted, targets)[0][1]
    assert 0.0 < expected < 1.5
    assert items.value() == expected  # exact: the same counts, the same formula
    # A resample counts a file's events as often as the file is drawn.
    counts = intervals.resample_counts(items.folds, seed=0, resamples=3)
    drawn = [(name, k) for name, c in zip(names, counts[0], strict=True) for k in range(c)]
    doubled = {f"{name}#{k}": predicted[name] for name, k in drawn}
    truth = {f"{name}#{k}": targets[name] for name, k in drawn}
    assert items.scores(counts)[0] == pytest.approx(scorer(doubled, truth)[0][1], rel=1e-12)


def _scores(values: dict, folds: list[str]) -> intervals.TaskScores:
    names = [f"{i}.wav" for i in range(len(folds))]
    stats = [[float(i % 3 != 0)] for i in range(len(folds))]
    items = ItemStats("top1_acc", names, stats, folds, fold_mean=len(set(folds)) > 1)
    where = np.asarray(items.folds)
    fold_scores = [items.stats[where == f, 0].mean() for f in sorted(set(folds))]
    return intervals.TaskScores(
        {"score": values["top1_acc"]}, values, {"top1_acc": items}, {"top1_acc": fold_scores}
    )


def test_with_intervals_bootstraps_one_split_and_takes_the_fold_spread_of_kfold_tasks():
    single = _scores({"top1_acc": 20 / 30}, ["test"] * 30)
    entry, items, resampled = intervals.with_intervals(single, "top1_acc", seed=5)
    assert entry["ci95_method"] == "bootstrap-clips" and entry["items"] == 30
    assert entry["ci95"] == intervals.percentile_interval(resampled)
    assert entry["ci95"][0] < 20 / 30 < entry["ci95"][1] and len(resampled) == 1000
    again = intervals.with_intervals(single, "top1_acc", seed=5)
    assert np.array_equal(again[2], resampled)  # seeded
    folds = ["f0"] * 10 + ["f1"] * 10 + ["f2"] * 10
    kfold = _scores({"top1_acc": 0.0}, folds)
    kfold.values["top1_acc"] = kfold.entry["score"] = float(np.mean(kfold.fold_scores["top1_acc"]))
    entry, _, _ = intervals.with_intervals(kfold, "top1_acc", seed=5)
    assert entry["ci95_method"] == "t-folds"
    assert entry["ci95"] == intervals.fold_interval(kfold.fold_scores["top1_acc"], entry["score"])
    wrong = _scores({"top1_acc": 0.5}, ["test"] * 30)
    with pytest.raises(intervals.DecompositionError, match="give top1_acc 0.666"):
        intervals.with_intervals(wrong, "top1_acc", seed=5)


def test_report_prints_symmetric_intervals_as_plus_minus():
    from natheear_tasks.evaluation.report import format_interval, format_score

    assert format_interval(0.5, [0.4, 0.6], 3) == "0.500 ± 0.100"
    assert format_interval(0.5, [0.41, 0.6], 3) == "0.500 ± 0.095"  # arms 0.09 and 0.1
    assert format_interval(0.98, [0.9, 1.0], 3) == "0.980 [0.900, 1.000]"
    assert format_interval(0.5, None, 3) == "0.500"
    task = {"metric": "mean_doa_error_deg"}
    entry = {"mean": 30.0, "mean_ci95": [25.0, 35.0], "median": 20.0, "median_ci95": [10.0, 22.0]}
    assert format_score(task, entry) == "30.0° ± 5.0 / 20.0° [10.0, 22.0]"


def _seld_file(g: np.random.Generator, events: int) -> tuple[list, list]:
    from natheear_tasks.formats.dcase_frames import FrameRow

    def rows(count: int, jitter: float) -> list:
        out = []
        for _ in range(count):
            cls, start = int(g.integers(0, 3)), int(g.integers(0, 25))
            azimuth = float(g.uniform(-150, 150))
            out += [
                FrameRow(k, cls, 0, azimuth + float(g.normal(0, jitter)), 0.0)
                for k in range(start, start + 5)
            ]
        return out

    return rows(events, 0.0), rows(events + int(g.integers(0, 2)), 15.0)


def test_seld_metrics_of_counted_files_equal_the_metrics_of_the_files_repeated():
    from natheear_tasks.evaluation.seld_metrics import SeldCounts, count_file, seld_scores

    g = np.random.default_rng(3)
    files = [_seld_file(g, events) for events in (2, 3, 1, 0, 2)]  # file 3: no reference
    counts = [count_file(ref, pred, 3, 30) for ref, pred in files]
    for c in counts:
        back = SeldCounts.from_vector(c.vector())
        assert all(np.array_equal(getattr(back, k), getattr(c, k)) for k in vars(c))
    stats = np.stack([c.vector() for c in counts])
    draws = np.array([[1, 1, 1, 1, 1], [2, 0, 1, 0, 3], [0, 0, 0, 5, 0]])
    fields = {
        "seld_score": "seld",
        "ER20": "er20",
        "F20": "f20",
        "LE_CD": "le_cd",
        "LR_CD": "lr_cd",
    }
    for metric, field in fields.items():
        scores = intervals.METRICS[metric](stats, draws)
        for draw, score in zip(draws[:2], scores[:2], strict=True):
            total = SeldCounts.zeros(3)
            for c, times in zip(counts, draw, strict=True):
                for _ in range(times):
                    total = total + c
            assert score == pytest.approx(getattr(seld_scores(total), field), rel=1e-12)
        assert np.isnan(scores[2])  # only the file without a reference event: undefined


def test_report_prints_seld_scores_with_their_parts():
    from natheear_tasks.evaluation.report import format_score, metric_label

    task = {"metric": "seld_score", "higher_is_better": False}
    entry = {"score": 0.5, "ci95": [0.45, 0.55], "ER20": 0.8, "ER20_ci95": [0.7, 0.9]}
    entry |= {"F20": 0.25, "F20_ci95": None, "LE_CD": 40.0, "LE_CD_ci95": [30.0, 60.0]}
    entry |= {"LR_CD": 0.5, "LR_CD_ci95": [0.4, 0.6]}
    assert format_score(task, entry) == (
        "0.500 ± 0.050 (0.80 ± 0.10 / 0.25 / 40.0° [30.0, 60.0] / 0.50 ± 0.10)"
    )
    assert metric_label(task) == "SELD score ↓ (ER20 ↓ / F20 ↑ / LE_CD ↓ / LR_CD ↑)"
