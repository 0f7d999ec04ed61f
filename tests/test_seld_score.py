"""natheear-tasks seld-score: DCASE SELD metrics of CSV folders, end to end."""

import json

import pytest

from natheear_tasks.cli import main
from natheear_tasks.formats.dcase_frames import FrameRow, format_frame_csv


def event(cls, frames, azimuth, elevation=0.0, source=0, distance=None):
    return [FrameRow(f, cls, source, azimuth, elevation, distance) for f in frames]


@pytest.fixture
def folders(tmp_path):
    """ref/a.csv: class 0 at az 0 in frames 0-9, class 1 at az 90 in frames 5-14 (L = 14:
    2 segments; N_ref 1 + 2 = 3). ref/b.csv (STARSS23 style, with distances): class 2 at
    az -90 in frames 0-19 (2 segments, N_ref 2). pred/a.csv: class 0 exact, class 1 at az
    120 (30 degrees off); no pred/b.csv."""
    ref, pred = tmp_path / "ref", tmp_path / "pred"
    ref.mkdir()
    pred.mkdir()
    (ref / "a.csv").write_text(
        format_frame_csv(event(0, range(10), 0) + event(1, range(5, 15), 90))
    )
    (ref / "b.csv").write_text(format_frame_csv(event(2, range(20), -90, distance=150)))
    (pred / "a.csv").write_text(
        format_frame_csv(event(0, range(10), 0) + event(1, range(5, 15), 120))
    )
    return ref, pred


def test_scores_folders_end_to_end(folders, tmp_path, capsys):
    ref, pred = folders
    out = tmp_path / "scores" / "seld.json"
    # as DCASE: b has no prediction and is not scored
    assert main(["seld-score", "--ref", str(ref), "--pred", str(pred), "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert (result["D"], result["I"], result["N_ref"]) == (0, 2, 3)
    assert "not scored (as in DCASE): b" in capsys.readouterr().out
    assert main(["seld-score", "--ref", str(ref), "--pred", str(pred), "--json", str(out),
                 "--score-missing"]) == 0  # fmt: skip
    result = json.loads(out.read_text())
    # a: class 0 one TP; class 1 paired in both segments 30 degrees off: 2 spatial FP, each
    # an insertion. b: not predicted, all missed: 2 deletions. ER20 = (2 + 2) / 5.
    # F20 = mean(1, 0 / (0 + 2), 0 / (0 + 1)) = 1/3; LE_CD = mean(0, 30, 180) = 70;
    # LR_CD = mean(1, 2 / 2, 0 / 2) = 2/3
    assert (result["S"], result["D"], result["I"], result["N_ref"]) == (0, 2, 2, 5)
    assert result["ER20"] == pytest.approx(0.8)
    assert result["F20"] == pytest.approx(1 / 3)
    assert result["LE_CD"] == pytest.approx(70)
    assert result["LR_CD"] == pytest.approx(2 / 3)
    assert result["SELD"] == pytest.approx((0.8 + 2 / 3 + 70 / 180 + 1 / 3) / 4)
    assert result["num_classes"] == 3 and result["num_classes_from"] == "largest class index + 1"
    assert result["missing_predictions"] == ["b"] and result["segments"] == 4
    assert [c["FP_spatial"] for c in result["classes"]] == [0, 2, 0]
    assert [c["N_ref"] for c in result["classes"]] == [1, 2, 2]
    printed = capsys.readouterr().out
    assert "ER20" in printed and "class 2" in printed and "scored as all missed: b" in printed

    # 4 classes: class 3 has no reference and counts F20 0, LE_CD 180, LR_CD 0
    assert main(["seld-score", "--ref", str(ref), "--pred", str(pred), "--json", str(out),
                 "--num-classes", "4", "--score-missing"]) == 0  # fmt: skip
    result = json.loads(out.read_text())
    assert result["num_classes_from"] == "--num-classes"
    assert result["F20"] == pytest.approx(1 / 4) and result["LE_CD"] == pytest.approx(97.5)
    assert result["ER20"] == pytest.approx(0.8)  # the error rate does not depend on it
    assert "class(es) [3] have no reference event" in capsys.readouterr().out


def test_bad_input_is_listed_and_nothing_written(folders, tmp_path, capsys):
    ref, pred = folders
    (ref / "a.csv").write_text("0,0,0,0,0\n1,0,0,200,0\n2,5,0,0,0\n")
    (pred / "c.csv").write_text("0,0,0,0,0\n")
    out = tmp_path / "seld.json"
    code = main(["seld-score", "--ref", str(ref), "--pred", str(pred), "--json", str(out),
                 "--num-classes", "3"])  # fmt: skip
    assert code == 2 and not out.exists()
    error = capsys.readouterr().err
    assert "3 problem(s)" in error
    assert f"{ref / 'a.csv'}: line 2: azimuth 200.0 outside [-180, 180]" in error
    assert f"{ref / 'a.csv'}: line 3: class '5' is not an integer in [0, 2]" in error
    assert f"{pred / 'c.csv'}: no reference c.csv in {ref}" in error


def test_missing_folders_and_cartesian_outputs_are_refused(folders, tmp_path, capsys):
    ref, pred = folders
    assert main(["seld-score", "--ref", str(tmp_path / "nope"), "--pred", str(pred)]) == 2
    assert "reference folder" in capsys.readouterr().err
    (tmp_path / "nested" / "dev-test").mkdir(parents=True)
    assert main(["seld-score", "--ref", str(tmp_path / "nested"), "--pred", str(pred)]) == 2
    assert (
        "holds no .csv file (it has folders dev-test: pass one of them)" in capsys.readouterr().err
    )
    # frame,class,source,x,y,z (the DCASE 2022 baseline's Cartesian output) would parse as
    # azimuth, elevation and distance within [-1, 1]
    (pred / "a.csv").write_text("0,0,0,0.6,0.8,0.0\n1,0,0,0.6,0.8,0.0\n")
    assert main(["seld-score", "--ref", str(ref), "--pred", str(pred)]) == 2
    assert "looks like the DCASE 2022 Cartesian output" in capsys.readouterr().err
    # references of frame 0 alone: no segment is scored (DCASE convention), nothing to rate
    only = tmp_path / "only"
    only.mkdir()
    (only / "a.csv").write_text("0,0,0,0,0\n")
    assert main(["seld-score", "--ref", str(only), "--pred", str(only)]) == 2
    assert "no reference event in the scored segments" in capsys.readouterr().err


def test_help():
    with pytest.raises(SystemExit) as exit_info:
        main(["seld-score", "--help"])
    assert exit_info.value.code == 0


def test_the_2023_baseline_output_scores_as_its_polar_equivalent(folders, tmp_path, capsys):
    """frame,class,source,x,y,z,distance with source 0 on every row (as the DCASE 2023
    baseline writes them), two rows of one class in a frame included."""
    ref, pred = folders
    polar = tmp_path / "polar"
    polar.mkdir()
    (polar / "a.csv").write_text("".join(f"{f},0,0,0.00,0.00\n" for f in range(10))
                                 + "".join(f"{f},1,0,120.00,0.00\n" for f in range(5, 15))
                                 + "7,1,0,-60.00,0.00\n")  # fmt: skip
    cartesian = tmp_path / "cartesian"
    cartesian.mkdir()
    (cartesian / "a.csv").write_text(
        "".join(f"{f},0,0,1.0,0.0,0.0,0\n" for f in range(10))
        + "".join(f"{f},1,0,-0.5,0.8660254037844386,0.0,0\n" for f in range(5, 15))
        + "7,1,0,0.5,-0.8660254037844386,0.0,0\n"
    )
    results = []
    for folder in (polar, cartesian):
        out = tmp_path / f"{folder.name}.json"
        assert (
            main(["seld-score", "--ref", str(ref), "--pred", str(folder), "--json", str(out)]) == 0
        )
        results.append(json.loads(out.read_text()))
    for key in ("ER20", "F20", "LE_CD", "LR_CD", "SELD"):
        assert results[0][key] == pytest.approx(results[1][key], abs=1e-9), key
    assert results[0]["classes"][1]["FP"] == 1  # the repeated row: one more predicted track


def test_bounds_and_output_path_are_checked_before_scoring(folders, tmp_path, capsys):
    ref, pred = folders
    assert main(["seld-score", "--ref", str(ref), "--pred", str(pred), "--json",
                 str(tmp_path)]) == 2  # fmt: skip
    assert "is a folder; name a file" in capsys.readouterr().err
    assert main(["seld-score", "--ref", str(ref), "--pred", str(pred), "--num-classes",
                 "100000000"]) == 2  # fmt: skip
    assert "--num-classes must be in [1, 1000]" in capsys.readouterr().err
    (ref / "a.csv").write_text("100000000,0,0,0,0\n")
    assert main(["seld-score", "--ref", str(ref), "--pred", str(pred)]) == 2
    assert "frame '100000000' is not an integer in" in capsys.readouterr().err
