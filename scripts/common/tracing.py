"""Named phases of a job's work, for whoever measures the job (``benchmarks/``).

The code marks its own phases (``with tracing.phase("evaluate"):`` or
``@tracing.traced("evaluate")``); a tracer installed with :func:`install` times them.
Without one, a phase is one shared do-nothing context: no clock is read and nothing is
recorded, so the marks cost a workflow job nothing measurable.

A tracer is any object with a ``phase(name, **details)`` method that returns a context
manager; phases nest as the calls do.
"""

from __future__ import annotations

import contextlib
import functools
from typing import Protocol


class Tracer(Protocol):
    def phase(self, name: str, **details) -> contextlib.AbstractContextManager: ...


_UNTRACED = contextlib.nullcontext()
_tracer: Tracer | None = None


def install(tracer: Tracer | None) -> None:
    """Time every phase from now on with ``tracer`` (None: stop tracing)."""
    global _tracer
    _tracer = tracer


def phase(name: str, **details) -> contextlib.AbstractContextManager:
    """A context that the installed tracer times as ``name`` with ``details`` (e.g. the
    number of images a pass handles)."""
    return _UNTRACED if _tracer is None else _tracer.phase(name, **details)


def traced(name: str):
    """Decorator: every call of the function is phase ``name``."""

    def decorate(function):
        @functools.wraps(function)
        def in_phase(*args, **kwargs):
            with phase(name):
                return function(*args, **kwargs)

        return in_phase

    return decorate
