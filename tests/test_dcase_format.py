"""natheear_tasks.tasks.dcase: the DCASE frame-list CSV, read, checked and written."""

from pathlib import Path

import numpy as np
import pytest

from natheear_tasks.tasks.dcase import (
    DcaseFormatError,
    FrameRow,
    azimuth_elevation,
    direction_xyz,
    format_frame_csv,
    parse_frame_csv,
)


def test_rows_with_and_without_distance_round_trip():
    text = "3,1,0,90,10\n1,0,0,-30.5,0\n3,1,1,180,-90\n"
    rows = parse_frame_csv(text, Path("a.csv"), num_classes=2)
    assert [(r.frame, r.cls, r.source) for r in rows] == [(1, 0, 0), (3, 1, 0), (3, 1, 1)]
    assert rows[0].distance is None and rows[0].azimuth == -30.5
    assert parse_frame_csv(format_frame_csv(rows), Path("b.csv")) == rows
    starss23 = parse_frame_csv("0,12,2,-45,20,153\n", Path("c.csv"))
    assert starss23[0].distance == 153
    assert format_frame_csv(starss23) == "0,12,2,-45.00,20.00,153.00\n"


def test_every_bad_row_is_listed():
    text = "0,0,0,190,0\n1,x,0,0,0\n2,5,0,0,0\n3,0,0,0,95\n4,0,0,0\n"
    text += "5,0,0,0,0\n5,0,0,1,1\n-1,0,0,0,0\n"
    with pytest.raises(DcaseFormatError) as info:
        parse_frame_csv(text, Path("bad.csv"), num_classes=3)
    problems = info.value.problems
    assert len(problems) == 7
    assert "azimuth 190.0" in problems[0] and problems[0].startswith("line 1")
    assert "integers" in problems[1]
    assert "class 5 outside [0, 3)" in problems[2]
    assert "elevation 95.0" in problems[3]
    assert "4 columns" in problems[4]
    assert "given twice" in problems[5] and problems[5].startswith("line 7")
    assert "negative frame" in problems[6]
    assert "bad.csv" in str(info.value)


@pytest.mark.parametrize(("az", "el"), [(0, 0), (90, 0), (-135, 30), (180, -60), (45, 90)])
def test_directions_in_our_frame(az, el):
    xyz = direction_xyz(az, el)
    assert np.linalg.norm(xyz) == pytest.approx(1)
    if az == 90 and el == 0:
        assert xyz == pytest.approx([0, 1, 0], abs=1e-12)  # 90 degrees is the left (+y)
    back_az, back_el = azimuth_elevation(xyz)
    assert back_el == pytest.approx(el, abs=1e-9)
    if abs(el) < 90:
        assert (back_az - az + 180) % 360 - 180 == pytest.approx(0, abs=1e-9)


def test_frame_row_direction():
    assert FrameRow(0, 0, 0, 0.0, 0.0).direction == pytest.approx([1, 0, 0])
