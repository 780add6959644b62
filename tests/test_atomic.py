"""Outputs appear whole or not at all, even when the process dies between two renames."""
import os

import pytest

from stages import atomic
from stages.atomic import atomic_directory


def write_output(target, text: str) -> None:
    with atomic_directory(target) as out:
        (out / "result.txt").write_text(text)


def test_a_failing_block_keeps_the_old_output(tmp_path):
    target = tmp_path / "output"
    write_output(target, "old")
    with pytest.raises(ValueError):
        with atomic_directory(target) as out:
            (out / "result.txt").write_text("half")
            raise ValueError("the stage failed")
    assert (target / "result.txt").read_text() == "old"
    assert sorted(path.name for path in tmp_path.iterdir()) == ["output"]


def test_a_kill_between_the_renames_loses_nothing(tmp_path, monkeypatch):
    target = tmp_path / "output"
    write_output(target, "old")
    real_replace = os.replace

    def killed_after_moving_the_old_output_aside(source, destination):
        real_replace(source, destination)
        if str(destination).endswith(".previous"):
            raise KeyboardInterrupt  # stands in for SIGKILL at the worst moment

    monkeypatch.setattr(atomic.os, "replace", killed_after_moving_the_old_output_aside)
    with pytest.raises(KeyboardInterrupt):
        write_output(target, "new")
    monkeypatch.undo()
    assert not target.exists() and (tmp_path / "output.previous/result.txt").read_text() == "old"

    with pytest.raises(ValueError):  # the next run fails too: the old output is back all the same
        with atomic_directory(target):
            raise ValueError("the stage failed again")
    assert (target / "result.txt").read_text() == "old"
    write_output(target, "new")
    assert (target / "result.txt").read_text() == "new"
    assert sorted(path.name for path in tmp_path.iterdir()) == ["output"]
