"""natheear_tasks.evaluation.seld_metrics: the DCASE 2022-2023 SELD metrics on hand-worked
cases, on the official code's borderline decisions, and against a loop written from the
definitions. Expected values are worked out in the comments from the definitions in the
module docstring (1-s segments of ten 100-ms frames; a file is scored up to the segment of
its last reference frame L: ceil(L / 10) segments)."""

import random

import numpy as np
import pytest
from scipy.optimize import linear_sum_assignment

from natheear_tasks.evaluation.seld_metrics import (
    SeldCounts,
    angular_distance,
    count_file,
    scored_segments,
    seld_scores,
)
from natheear_tasks.formats.dcase_frames import FrameRow


def event(cls: int, frames, azimuth: float, elevation: float = 0.0, source: int = 0):
    """One row per frame of a static source."""
    return [FrameRow(f, cls, source, azimuth, elevation) for f in frames]


def scores(reference, prediction, num_classes, num_frames=None):
    return seld_scores(count_file(reference, prediction, num_classes, num_frames))


def values(s):
    return [s.er20, s.f20, s.le_cd, s.lr_cd, s.seld]


def test_oracle_predictions_score_perfectly():
    # two classes, two simultaneous sources of class 0, a moving source, 3 segments
    moving = [FrameRow(f, 1, 0, -170 + 12.5 * f, 40 - 3 * f) for f in range(3, 25)]
    reference = event(0, range(0, 25), 45) + event(0, range(8, 18), -120, 20, 1) + moving
    s = scores(reference, reference, num_classes=2)
    # the official arccos of equal directions is up to ~1e-6 degrees, not 0
    assert values(s) == pytest.approx([0.0, 1.0, 0.0, 1.0, 0.0], abs=1e-6)
    assert s.le_cd > 0


def test_prediction_rotated_by_30_degrees():
    # class 0 at az 170 (rotated to 200 = -160: the wrap) over frames 0-19 (2 segments),
    # class 1 at az -60 over frames 10-19 (1 segment); elevation 0, so each error is 30.
    reference = event(0, range(20), 170) + event(1, range(10, 20), -60)
    rotated = event(0, range(20), -160) + event(1, range(10, 20), -30)
    s = scores(reference, rotated, num_classes=2)
    # every paired track is 30 > 20 degrees off: a spatial FP, counted as an insertion
    # (loc_FP 1, loc_FN 0 per track): I = 3 = N_ref, ER20 = 1; F20 = 0 / (0 + 3) = 0;
    # LE_CD = 30 for both classes; all tracks paired, LR_CD = 1
    assert (s.er20, s.f20, s.lr_cd) == pytest.approx((1.0, 0.0, 1.0))
    assert s.le_cd == pytest.approx(30, abs=1e-9)
    assert s.seld == pytest.approx((1 + 1 + 30 / 180 + 0) / 4)


@pytest.mark.parametrize(("off", "true_positive"), [(19.0, True), (21.0, False)])
def test_the_20_degree_threshold(off, true_positive):
    reference = event(0, range(10), 0) + event(0, [10], 0)  # L = 10: one segment, frames 0-9
    s = scores(reference, event(0, range(10), off), num_classes=1)
    assert s.f20 == pytest.approx(1.0 if true_positive else 0.0)
    assert s.er20 == pytest.approx(0.0 if true_positive else 1.0)
    assert s.le_cd == pytest.approx(off)


def test_track_error_is_the_mean_over_its_frames():
    reference = event(0, range(10), 0)  # L = 9: one segment
    # 5 frames 0 degrees off, 5 frames 50 off: the track's error is 25 > 20, a spatial FP
    half = event(0, range(5), 0) + event(0, range(5, 10), 50)
    s = scores(reference, half, num_classes=1)
    assert (s.f20, s.er20, s.le_cd) == pytest.approx((0.0, 1.0, 25))
    # 6 frames at 0, 4 at 30: mean 12, a true positive although 4 frames are 30 off
    most = event(0, range(6), 0) + event(0, range(6, 10), 30)
    s = scores(reference, most, num_classes=1)
    assert (s.f20, s.er20, s.le_cd) == pytest.approx((1.0, 0.0, 12))


def test_missed_event():
    # class 0 in segment 0 found; class 1 in segment 1 (frames 10-19) missed
    reference = event(0, range(10), 0) + event(1, range(10, 20), 90)
    counts = count_file(reference, event(0, range(10), 0), num_classes=2)
    assert (counts.substitutions, counts.deletions, counts.insertions) == (0, 1, 0)
    s = seld_scores(counts)
    # ER20 = D / N_ref = 1/2; F20 = mean(1, 0 / (0 + 1/2)) = 1/2;
    # LE_CD = mean(0, 180 for a class without a paired track) = 90; LR_CD = mean(1, 0) = 1/2
    assert values(s) == pytest.approx([0.5, 0.5, 90.0, 0.5, (0.5 + 0.5 + 0.5 + 0.5) / 4])


def test_inserted_event():
    # reference: class 0 over frames 0-19 (2 segments), class 1 over frames 10-19
    reference = event(0, range(20), 0) + event(1, range(10, 20), 90)
    # prediction: exact, plus class 1 at -90 in frames 0-4 (segment 0, no class 1 there)
    counts = count_file(reference, reference + event(1, range(5), -90), num_classes=2)
    assert (counts.substitutions, counts.deletions, counts.insertions) == (0, 0, 1)
    assert counts.fp.tolist() == [0, 1] and counts.n_ref.tolist() == [2, 1]
    s = seld_scores(counts)
    # ER20 = 1/3; F20 = mean(1, 1 / (1 + 1/2)) = 5/6; LE_CD 0; LR_CD 1 (FP do not enter)
    assert values(s) == pytest.approx([1 / 3, 5 / 6, 0.0, 1.0, (1 / 3 + 1 / 6) / 4])


def test_wrong_class():
    # class 0 in segment 0 predicted as class 1 (right direction); class 1 in segment 1 right
    reference = event(0, range(10), 0) + event(1, range(10, 20), 45)
    prediction = event(1, range(10), 0) + event(1, range(10, 20), 45)
    counts = count_file(reference, prediction, num_classes=2)
    # segment 0: loc_FN 1 (class 0), loc_FP 1 (class 1): one substitution
    assert (counts.substitutions, counts.deletions, counts.insertions) == (1, 0, 0)
    s = seld_scores(counts)
    # ER20 = 1/2; F20 = mean(0, 1 / (1 + 1/2)) = 1/3; LE_CD = mean(180, 0) = 90;
    # LR_CD = mean(0 / (0 + 1), 1) = 1/2
    assert values(s) == pytest.approx([0.5, 1 / 3, 90.0, 0.5, (0.5 + 2 / 3 + 0.5 + 0.5) / 4])


def test_overlapping_sources_of_a_class_are_paired_by_direction():
    # two sources of class 0 at az 0 (source 0) and 90 (source 1), frames 0-9
    reference = event(0, range(10), 0, source=0) + event(0, range(10), 90, source=1)
    # predicted 10 degrees off each, with the track ids swapped and the rows in other order
    swapped = event(0, range(10), 80, source=0) + event(0, range(10), 10, source=1)
    s = scores(reference, swapped[::-1], num_classes=1)
    # Hungarian pairs 0 with 10 and 90 with 80: two tracks 10 degrees off, both TP
    # (pairing by source id would give two 80-degree errors)
    assert [s.er20, s.f20, s.lr_cd] == [0.0, 1.0, 1.0]
    assert s.le_cd == pytest.approx(10)
    # a third predicted source is one FP (n_pred 3 > n_ref 2): I = 1 of N_ref 2
    counts = count_file(reference, swapped + event(0, range(10), -90, source=2), 1)
    assert counts.fp.tolist() == [1] and counts.tp.tolist() == [2] and counts.insertions == 1
    # one reference direction and two predicted (50 degrees off, then 10): the nearer is
    # paired, a TP with error 10; the other is one FP
    two = event(0, range(10), 50, source=0) + event(0, range(10), 10, source=1)
    counts = count_file(event(0, range(10), 0), two, 1)
    assert counts.tp.tolist() == [1] and counts.fp.tolist() == [1]
    assert counts.le_sum[0] == pytest.approx(10)


def test_an_event_spanning_two_segments_counts_in_each():
    reference = event(0, range(5, 15), 0)  # frames 5-14: segments 0 and 1, N_ref 2
    # predicted only until frame 9: segment 1 missed
    s = scores(reference, event(0, range(5, 10), 0), num_classes=1)
    # ER20 = D 1 / 2; F20 = 1 / (1 + 1/2) = 2/3; LE_CD 0; LR_CD = 1 / (1 + 1) = 1/2
    assert values(s) == pytest.approx([0.5, 2 / 3, 0.0, 0.5, (0.5 + 1 / 3 + 0 + 0.5) / 4])
    # predicted throughout, 30 degrees off in segment 1 only: one TP, one spatial FP
    late = event(0, range(5, 10), 0) + event(0, range(10, 15), 30)
    s = scores(reference, late, num_classes=1)
    # ER20 = I 1 / 2; F20 = 1 / (1 + 1) = 1/2; LE_CD = (0 + 30) / 2 = 15; LR_CD 1
    assert values(s) == pytest.approx([0.5, 0.5, 15.0, 1.0, (0.5 + 0.5 + 15 / 180) / 4])


def test_files_accumulate_before_the_ratios():
    perfect = event(0, range(30), 0)  # L = 29: 3 segments, N_ref 3, all found
    missed = event(0, range(10), 0)  # 1 segment, N_ref 1, not predicted
    counts = count_file(perfect, perfect, 1) + count_file(missed, [], 1)
    # ER20 = D 1 / N_ref 4 (not the mean of the files' 0 and 1)
    assert seld_scores(counts).er20 == 0.25
    assert counts.n_ref.tolist() == [4] and counts.tp.tolist() == [3]


def test_a_class_without_reference_counts_as_zero_in_the_macro_averages():
    reference = event(0, range(10), 0) + event(1, range(10), 90)
    s = scores(reference, reference, num_classes=3)  # class 2 never occurs
    # class 2: F20 0 (0 / 0), LE_CD 180, LR_CD 0, as the DCASE code gives
    assert s.class_f20.tolist() == pytest.approx([1.0, 1.0, 0.0])
    assert s.class_le_cd.tolist() == pytest.approx([0, 0, 180], abs=1e-6)
    assert values(s) == pytest.approx(
        [0.0, 2 / 3, 60.0, 2 / 3, (0 + 1 / 3 + 1 / 3 + 1 / 3) / 4], abs=1e-6
    )


def test_official_quirk_no_common_frame_counts_the_predicted_tracks_as_misses():
    reference = event(0, range(5, 10), 0)  # L = 9: one segment, one reference track
    # two predicted sources of the class, in frames 0-4 only: no frame shared
    prediction = event(0, range(5), 0, source=0) + event(0, range(5), 90, source=1)
    counts = count_file(reference, prediction, 1)
    # the DCASE code adds n_pred = 2 FN (not n_ref = 1) and no FP: D = 2 of N_ref 1
    assert counts.fn.tolist() == [2] and counts.fp.tolist() == [0] and counts.deletions == 2
    assert values(seld_scores(counts)) == pytest.approx([2.0, 0.0, 180.0, 0.0, 1.25])


def test_official_quirk_tracks_are_ranks_within_a_frame():
    # two events of class 0 one after the other in one segment: one reference track
    reference = event(0, range(5), 0, source=0) + event(0, range(5, 10), 90, source=1)
    assert count_file(reference, reference, 1).n_ref.tolist() == [1]
    # predicting the first direction throughout: the track's error is (5*0 + 5*90) / 10
    s = scores(reference, event(0, range(10), 0), num_classes=1)
    assert (s.er20, s.f20, s.le_cd) == pytest.approx((1.0, 0.0, 45))


def test_segments_end_with_the_last_reference_frame_unless_a_length_is_given():
    reference = event(0, range(11), 0)  # L = 10: one segment (frames 0-9), frame 10 unscored
    assert scored_segments(reference) == 1 and scored_segments(reference, 20) == 2
    extra = reference + event(0, [15], 0, source=1) + event(1, [12, 13], 90)
    s = scores(reference, extra, num_classes=2)
    assert (s.er20, s.class_f20[0]) == pytest.approx((0.0, 1.0))  # rows after frame 9: unscored
    # with the recording's length (20 frames), segment 1 counts: class 0 frame 10 paired,
    # the class 1 rows an insertion: ER20 = 1 / 2; F20 = mean(1, 0); LE_CD = mean(0, 180);
    # LR_CD = mean(1, 0)
    s = scores(reference, extra, num_classes=2, num_frames=20)
    assert values(s) == pytest.approx([0.5, 0.5, 90.0, 0.5, 0.5], abs=1e-6)
    assert scored_segments([]) == 0


def test_bad_arguments_are_refused():
    reference = event(0, range(10), 0)
    with pytest.raises(ValueError, match=r"class indices \[3\] outside \[0, 2\)"):
        count_file(reference, event(3, range(10), 0), num_classes=2)
    with pytest.raises(ValueError, match="beyond num_frames=8"):
        count_file(reference, reference, 1, num_frames=8)
    # no reference event: the official code's values (1 insertion / eps), not an exception
    counts = count_file([], event(0, range(10), 0), 1, num_frames=10)
    assert seld_scores(counts).er20 == 1 / np.finfo(np.float64).eps
    with pytest.raises(ValueError, match="counts of 1 and 2 classes"):
        SeldCounts.zeros(1) + SeldCounts.zeros(2)


@pytest.mark.parametrize(("reference_az", "official_side"), [(0.0, True), (45.0, False)])
def test_exactly_20_degrees_off_falls_where_the_official_formula_puts_it(
    reference_az, official_side
):
    """20 degrees apart at elevation 0 computes to 19.999999999999993 from azimuth 0 and to
    20.00000000000001 from azimuth 45 with the official spherical formula (the angle of the
    unit vectors by atan2 gives 20.0 for the second: a true positive there)."""
    distance = angular_distance(
        np.array([reference_az]), np.zeros(1), np.array([reference_az + 20]), np.zeros(1)
    )[0]
    assert (distance <= 20) == official_side
    reference = event(0, range(10), reference_az) + event(0, [10], 0)
    s = scores(reference, event(0, range(10), reference_az + 20), num_classes=1)
    assert (s.f20 > 0.5) == official_side


def reference_counts(reference, prediction, num_classes, per_segment=10, threshold=20.0):
    """The counts by one loop over segments, classes and frames, from the module
    docstring's definitions and the official angle formula (rows in file order)."""
    segments = scored_segments(reference, None, per_segment)
    tp, fp, fp_sp, fn, n_ref = (np.zeros(num_classes, dtype=np.int64) for _ in range(5))
    le_sum = np.zeros(num_classes)
    s_total = d_total = i_total = 0

    def cells(rows, seg, cls):
        out = {}
        for r in rows:
            if r.cls == cls and r.frame // per_segment == seg:
                out.setdefault(r.frame, []).append((r.azimuth, r.elevation))
        return out

    for seg in range(segments):
        loc_fp = loc_fn = 0
        for cls in range(num_classes):
            ref, pred = cells(reference, seg, cls), cells(prediction, seg, cls)
            nr = max((len(v) for v in ref.values()), default=0)
            npred = max((len(v) for v in pred.values()), default=0)
            n_ref[cls] += nr
            if nr and npred:
                tracks = {}
                for frame in sorted(ref):
                    if frame not in pred:
                        continue
                    g, p = np.array(ref[frame]), np.array(pred[frame])
                    cost = np.zeros((len(g), len(p)))
                    for j in range(len(p)):
                        for i in range(len(g)):
                            cost[i, j] = angular_distance(
                                g[i : i + 1, 0], g[i : i + 1, 1], p[j : j + 1, 0], p[j : j + 1, 1]
                            )[0]
                    rows, cols = linear_sum_assignment(cost)
                    for i, j in zip(rows, cols, strict=True):
                        tracks.setdefault(i, []).append(cost[i, j])
                if not tracks:
                    loc_fn += npred
                    fn[cls] += npred
                    continue
                for errors in tracks.values():
                    mean = sum(errors) / len(errors)
                    le_sum[cls] += mean
                    if mean <= threshold:
                        tp[cls] += 1
                    else:
                        loc_fp += 1
                        fp_sp[cls] += 1
                if npred > nr:
                    loc_fp += npred - nr
                    fp[cls] += npred - nr
                elif npred < nr:
                    loc_fn += nr - npred
                    fn[cls] += nr - npred
            elif nr:
                loc_fn += nr
                fn[cls] += nr
            elif npred:
                loc_fp += npred
                fp[cls] += npred
        s_total += min(loc_fp, loc_fn)
        d_total += max(0, loc_fn - loc_fp)
        i_total += max(0, loc_fp - loc_fn)
    return SeldCounts(tp, fp, fp_sp, fn, n_ref, le_sum, s_total, d_total, i_total)


def random_rows(rng, frames, classes, grid):
    """Rows on a coarse grid of directions, so that ties and exact 20-degree gaps occur."""
    rows = []
    for frame in range(frames):
        for _ in range(rng.choice([0, 0, 1, 1, 2, 3])):
            rows.append(FrameRow(frame, rng.randrange(classes), 0, rng.choice(grid),
                                 rng.choice([0.0, 0.0, 20.0, -20.0])))  # fmt: skip
    return rows


@pytest.mark.parametrize("seed", range(6))
def test_counts_equal_a_loop_over_the_definitions(seed):
    """Random files with repeated source ids (as the 2023 baseline writes them), rows out of
    order within frames, collinear directions 10 degrees apart (Hungarian ties) and exact
    20-degree gaps: the vectorized counts equal the loop's, bit for bit."""
    rng = random.Random(seed)
    grid = [float(a) for a in range(-180, 180, 10)]
    reference = random_rows(rng, 60, 3, grid)
    prediction = random_rows(rng, 65, 3, grid)
    rng.shuffle(prediction)
    prediction.sort(key=lambda r: r.frame)  # frames in order, rows within them shuffled
    ours = count_file(reference, prediction, 3)
    expected = reference_counts(reference, prediction, 3)
    for name in ("tp", "fp", "fp_spatial", "fn", "n_ref"):
        assert getattr(ours, name).tolist() == getattr(expected, name).tolist(), name
    np.testing.assert_allclose(ours.le_sum, expected.le_sum, rtol=0, atol=0)
    assert (ours.substitutions, ours.deletions, ours.insertions) == (
        expected.substitutions, expected.deletions, expected.insertions
    )  # fmt: skip


def test_micro_averaging_uses_the_summed_counts():
    reference = event(0, range(10), 0) + event(1, range(10), 90)
    prediction = event(0, range(10), 0) + event(1, range(10), 130)  # class 1: 40 off
    s = seld_scores(count_file(reference, prediction, 2), "micro")
    # TP 1, FP_spatial 1: F = 1 / (1 + 1) = 1/2; LE = (0 + 40) / 2; LR = 2 / 2
    assert (s.f20, s.le_cd, s.lr_cd) == pytest.approx((0.5, 20.0, 1.0))
