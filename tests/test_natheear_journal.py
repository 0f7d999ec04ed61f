"""natheear_tasks.tasks.journal: append-only completion records that survive a kill."""

import json

from natheear_tasks.tasks.journal import JOURNAL_DIR, Journal, read_journal


def test_records_read_back_from_every_writer(tmp_path):
    first, second = Journal(tmp_path), Journal(tmp_path)
    first.append({"split": "train", "file": "a.wav", "snr_db": 5.0})
    second.append({"split": "test", "file": "b.wav", "snr_db": None})
    first.append({"split": "train", "file": "c.wav", "snr_db": 7.5})
    first.close()
    second.close()
    assert first.path != second.path and first.path.parent == tmp_path / JOURNAL_DIR
    records = sorted(read_journal(tmp_path), key=lambda r: r["file"])
    assert [r["file"] for r in records] == ["a.wav", "b.wav", "c.wav"]
    assert records[1]["snr_db"] is None


def test_torn_and_unreadable_lines_do_not_count(tmp_path):
    journal = Journal(tmp_path)
    journal.append({"split": "train", "file": "a.wav"})
    journal.close()
    torn = json.dumps({"split": "train", "file": "b.wav"}).encode()
    with open(journal.path, "ab") as f:
        f.write(b"\x00" * 8 + b"\n")  # zeros, as after a crash
        f.write(torn[: len(torn) // 2])  # killed in the middle of a line
    assert read_journal(tmp_path) == [{"split": "train", "file": "a.wav"}]
    assert read_journal(tmp_path / "missing") == []
