"""The subcommands' exit codes and one-line messages (natheear_tasks.exits)."""

import errno
from concurrent.futures.process import BrokenProcessPool

import pytest

from natheear_tasks.baselines import seld_oracle
from natheear_tasks.children import Terminated
from natheear_tasks.cli import main
from natheear_tasks.exits import ALL_OR_NOTHING, RESUMABLE, run_command
from natheear_tasks.simulation import recordings


def _raises(error: BaseException):
    def work() -> int:
        raise error

    return work


@pytest.mark.parametrize("stopped", [RESUMABLE, ALL_OR_NOTHING])
def test_each_failure_is_one_line_and_its_exit_code(stopped, capsys, tmp_path):
    assert run_command(lambda: 0, (ValueError,), stopped) == 0
    assert run_command(_raises(ValueError("bad --x")), (ValueError,), stopped) == 2
    assert capsys.readouterr().err == "error: bad --x\n"
    assert run_command(_raises(KeyboardInterrupt()), (ValueError,), stopped) == 130
    assert capsys.readouterr().err == stopped.interrupted + "\n"
    assert run_command(_raises(Terminated("SIGTERM")), (ValueError,), stopped) == 143
    assert capsys.readouterr().err.startswith("terminated")
    full = OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "x" / "a.wav"))
    assert run_command(_raises(full), (ValueError,), stopped) == 1
    message = capsys.readouterr().err
    assert "the disk is full (" in message and f"writing {tmp_path / 'x' / 'a.wav'}" in message
    assert message.rstrip().endswith(stopped.rerun)
    assert run_command(_raises(BrokenProcessPool("gone")), (ValueError,), stopped) == 1
    assert capsys.readouterr().err == stopped.worker_died + "\n"
    with pytest.raises(TypeError):
        run_command(_raises(TypeError("a bug")), (ValueError,), stopped)


def test_all_or_nothing_commands_say_nothing_was_written(tmp_path, monkeypatch, capsys):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(recordings, "write_dataset", interrupted)
    monkeypatch.setattr(seld_oracle, "run_oracle", interrupted)
    assert main(["seld-synth", str(tmp_path / "d"), "--layout", "frames"]) == 130
    assert capsys.readouterr().err == "interrupted; nothing was written\n"
    oracle = ["seld-oracle", str(tmp_path / "d"), str(tmp_path / "o"), "--layout", "frames"]
    assert main(oracle) == 130
    assert capsys.readouterr().err == "interrupted; nothing was written\n"
