"""UndoStack: reverse order, failures logged and never hiding other steps, run once."""

from __future__ import annotations

import logging

import pytest

from httpjail_py.jail.cleanup import UndoStack


def test_runs_steps_newest_first() -> None:
    done: list[int] = []
    undo = UndoStack()
    for i in range(4):
        undo.push(f"step {i}", lambda i=i: done.append(i))
    undo.run()
    assert done == [3, 2, 1, 0]


def test_failing_step_is_a_warning_and_the_others_still_run(caplog: pytest.LogCaptureFixture) -> None:
    done: list[str] = []

    def boom() -> None:
        raise OSError("device busy")

    undo = UndoStack()
    undo.push("first", lambda: done.append("first"))
    undo.push("remove netns httpjail_x", boom)
    undo.push("last", lambda: done.append("last"))
    with caplog.at_level(logging.WARNING, logger="httpjail.cleanup"):
        undo.run()
    assert done == ["last", "first"]
    [record] = caplog.records
    assert record.levelno == logging.WARNING
    assert record.name == "httpjail.cleanup"
    assert "remove netns httpjail_x" in record.getMessage()
    assert record.exc_info is not None and "device busy" in str(record.exc_info[1])


def test_every_failing_step_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    def boom() -> None:
        raise RuntimeError("no")

    undo = UndoStack()
    undo.push("a", boom)
    undo.push("b", boom)
    with caplog.at_level(logging.WARNING, logger="httpjail.cleanup"):
        undo.run()
    assert [r.getMessage() for r in caplog.records] == ["cleanup step failed: b", "cleanup step failed: a"]


def test_second_run_does_nothing() -> None:
    calls: list[str] = []
    undo = UndoStack()
    undo.push("once", lambda: calls.append("once"))
    undo.run()
    undo.run()
    assert calls == ["once"]
    assert len(undo) == 0


def test_steps_pushed_after_a_run_run_on_the_next() -> None:
    calls: list[str] = []
    undo = UndoStack()
    undo.push("a", lambda: calls.append("a"))
    undo.run()
    undo.push("b", lambda: calls.append("b"))
    undo.run()
    assert calls == ["a", "b"]


def test_empty_stack_runs() -> None:
    UndoStack().run()
