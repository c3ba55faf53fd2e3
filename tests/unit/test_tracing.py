"""Phases the code marks are timed by an installed tracer, and cost nothing without one."""

from __future__ import annotations

import contextlib

import pytest

from scripts.common import tracing


class Recorder:
    def __init__(self):
        self.calls: list[tuple[str, str, dict]] = []

    @contextlib.contextmanager
    def phase(self, name: str, **details):
        self.calls.append(("enter", name, details))
        try:
            yield
        except Exception as error:
            self.calls.append(("exit", name, {"error": type(error).__name__}))
            raise
        self.calls.append(("exit", name, {}))


@pytest.fixture
def recorder():
    recorder = Recorder()
    tracing.install(recorder)
    yield recorder
    tracing.install(None)


def test_phases_reach_the_installed_tracer_nested_and_with_their_details(recorder):
    with tracing.phase("outer"), tracing.phase("inner", images=3):
        pass
    assert recorder.calls == [("enter", "outer", {}), ("enter", "inner", {"images": 3}),
                              ("exit", "inner", {}), ("exit", "outer", {})]


def test_traced_functions_are_phases_and_keep_their_result_and_name(recorder):
    @tracing.traced("double")
    def double(x):
        """Twice x."""
        return 2 * x

    assert double(4) == 8 and double.__name__ == "double" and double.__doc__ == "Twice x."
    assert recorder.calls == [("enter", "double", {}), ("exit", "double", {})]


def test_exceptions_leave_the_phase_and_propagate(recorder):
    @tracing.traced("failing")
    def failing():
        raise ValueError("no")

    with pytest.raises(ValueError, match="no"):
        failing()
    assert recorder.calls == [("enter", "failing", {}), ("exit", "failing", {"error": "ValueError"})]


def test_without_a_tracer_a_phase_is_one_shared_no_op():
    recorder = Recorder()
    tracing.install(recorder)
    tracing.install(None)
    assert tracing.phase("a") is tracing.phase("b", images=1)
    with tracing.phase("a"):
        pass
    assert recorder.calls == []
