"""natheear_tasks.formats.dcase_frames: the DCASE frame-list CSV, read, checked and written."""

from pathlib import Path

import numpy as np
import pytest

from natheear_tasks.formats.dcase_events import EventRow, format_event_csv, parse_event_csv
from natheear_tasks.formats.dcase_frames import (
    DcaseFormatError,
    FrameRow,
    azimuth_elevation,
    direction_xyz,
    format_frame_csv,
    parse_frame_csv,
    parse_output_csv,
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
    assert "class 'x' is not an integer in [0, 2]" in problems[1]
    assert "class '5' is not an integer in [0, 2]" in problems[2]
    assert "elevation 95.0" in problems[3]
    assert "4 columns" in problems[4]
    assert "given twice" in problems[5] and problems[5].startswith("line 7")
    assert "frame '-1' is not an integer" in problems[6]
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


# --- the event-list layout (TUT Sound Events 2018, TAU Spatial Sound Events 2019) ---------

EVENTS_HEADER = "sound_event_recording,start_time,end_time,ele,azi,dist\n"


def test_event_list_round_trips_with_and_without_distance():
    text = EVENTS_HEADER + "speech, 1.5, 2.25, 10, -90, 2\nknock,0.2,0.9,-40,170,1\n"
    rows = parse_event_csv(text, Path("split1_ir0_ov1_1.csv"))
    assert [r.label for r in rows] == ["knock", "speech"]  # sorted by onset
    assert rows[1] == EventRow("speech", 1.5, 2.25, 10.0, -90.0, 2.0)
    assert rows[1].direction == pytest.approx([0, -np.cos(np.radians(10)), np.sin(np.radians(10))])
    assert parse_event_csv(format_event_csv(rows), Path("x.csv")) == rows
    no_distance = parse_event_csv(
        "sound_event_recording,start_time,end_time,ele,azi\nphone,0,1,0,0\n", Path("y.csv")
    )
    assert no_distance[0].distance is None
    assert format_event_csv(no_distance).startswith(
        "sound_event_recording,start_time,end_time,ele,azi\n"
    )


def test_every_bad_event_row_is_listed():
    text = EVENTS_HEADER + "a,1,0.5,0,0,1\nb,0,1,95,0,1\nc,0,1,0,-181,1\n,0,1,0,0,1\n"
    text += "d,0,1,0,0\ne,x,1,0,0,1\nf,0,1,0,0,-2\ng,0,1,0,0,1\ng,0,1,0,0,1\n"
    with pytest.raises(DcaseFormatError) as info:
        parse_event_csv(text, Path("bad.csv"))
    problems = info.value.problems
    assert len(problems) == 8
    assert problems[0].startswith("line 2") and "0 <= start < end" in problems[0]
    assert "elevation 95.0" in problems[1]
    assert "azimuth -181.0" in problems[2]
    assert "no class name" in problems[3]
    assert "5 columns, expected 6" in problems[4]
    assert "must be numbers" in problems[5]
    assert "distance -2.0" in problems[6]
    assert "given twice" in problems[7] and problems[7].startswith("line 10")
    assert "event-list CSV" in str(info.value)


def test_event_list_header_is_required():
    with pytest.raises(DcaseFormatError, match="header"):
        parse_event_csv("speech,0,1,0,0,1\n", Path("no-header.csv"))
    with pytest.raises(DcaseFormatError, match="no header"):
        parse_event_csv("", Path("empty.csv"))


@pytest.mark.parametrize(
    "row",
    ["inf,0,0,0,0", "1e400,0,0,0,0", "0,99999999999999999999999,0,0,0", "0,0,nan,0,0",
     "360000001,0,0,0,0", "0,0,1e30,0,0"],
)  # fmt: skip
def test_integer_columns_beyond_their_range_are_listed_rows(row):
    """inf, 1e400, integers beyond int64 and frames past MAX_FRAME are bad rows, not
    OverflowError tracebacks or huge allocations later."""
    with pytest.raises(DcaseFormatError, match="is not an integer in"):
        parse_frame_csv(row + "\n", Path("bad.csv"))
    with pytest.raises(DcaseFormatError, match="is not an integer in"):
        parse_output_csv(row + "\n", Path("bad.csv"))


def test_outputs_keep_file_order_repeats_and_cartesian_rows():
    text = "\ufeff3,1,0,10,0\n3,0,0,20,5\n3,0,0,-30,0\n4,0,0,0.0,1.0,0.0,0\n"
    rows = parse_output_csv(text, Path("out.csv"))
    assert [(r.frame, r.cls, r.azimuth) for r in rows[:3]] == [(3, 1, 10), (3, 0, 20), (3, 0, -30)]
    assert rows[3].azimuth == pytest.approx(90) and rows[3].elevation == pytest.approx(0)
    with pytest.raises(DcaseFormatError, match="given twice"):
        parse_frame_csv("3,0,0,20,5\n3,0,0,-30,0\n", Path("dataset.csv"))
