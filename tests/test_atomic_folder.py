"""natheear_tasks.atomic.atomic_folder: a new folder appears complete or not at all."""

import pytest

from natheear_tasks.atomic import atomic_folder


def test_the_folder_appears_when_the_block_ends(tmp_path):
    out = tmp_path / "deep" / "out"
    with atomic_folder(out) as staging:
        (staging / "a.txt").write_text("a")
        assert not out.exists() and staging.parent == out.parent
        assert staging.name.startswith(".out.")
    assert (out / "a.txt").read_text() == "a"
    assert [p.name for p in out.parent.iterdir()] == ["out"]


@pytest.mark.parametrize("error", [ValueError("bad"), KeyboardInterrupt()])
def test_a_failing_block_leaves_nothing(tmp_path, error):
    with pytest.raises(type(error)):
        with atomic_folder(tmp_path / "out") as staging:
            (staging / "half.txt").write_text("half")
            raise error
    assert list(tmp_path.iterdir()) == []
