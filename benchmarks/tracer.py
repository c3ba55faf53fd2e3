"""Tracing a workflow job from inside: the phases the project's code marks
(``scripts.common.tracing``) timed, with the job's memory sampled every 20 ms.

A traced job starts as ``python -c TRACE_BOOT -m scripts <step> …``: this module is
imported before the job's own code and must not pay for numpy, pandas or TensorFlow
(their imports are phases of the job). The tracer adds a thread that reads
``/proc/self/status`` every 20 ms and nothing else. ``python_shim`` makes every job
Snakemake starts a traced one; ``read_traces`` reads what they wrote.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import sys
import threading
import time
from pathlib import Path

from scripts.common import tracing

TRACE_BOOT = ("import sys, time; started = time.time(); from benchmarks.tracer import traced_job; "
              "status = traced_job(sys.argv[1:], started); from scripts.__main__ import leave; leave(status)")
MEMORY_FIELDS = ("VmRSS", "RssAnon", "RssFile", "VmHWM")
SAMPLE_SECONDS = 0.02


def process_memory() -> dict[str, float]:
    """This process's resident memory in MB: total, anonymous, file-backed (mmap'd
    files, libraries) and the high-water mark (``/proc/self/status``)."""
    fields = {}
    with open("/proc/self/status") as status:
        for line in status:
            key, _, value = line.partition(":")
            if key in MEMORY_FIELDS:
                fields[key] = int(value.split()[0]) / 1024
    return fields


class JobTracer:
    """Timed, nested phases of one job and its memory sampled every 20 ms."""

    def __init__(self):
        self.events: list[dict] = []
        self.samples: list[tuple[float, float, float]] = []  # time, anonymous MB, file-backed MB
        self.stack: list[str] = []
        self._stop = threading.Event()
        self._sampler = threading.Thread(target=self._sample, daemon=True)
        self._sampler.start()

    def _sample(self) -> None:
        while not self._stop.wait(SAMPLE_SECONDS):
            memory = process_memory()
            self.samples.append((time.time(), memory["RssAnon"], memory["RssFile"]))

    @contextlib.contextmanager
    def phase(self, name: str, **details):
        start, before = time.time(), process_memory()["VmRSS"]
        parent = self.stack[-1] if self.stack else None
        self.stack.append(name)
        try:
            yield
        finally:
            self.stack.pop()
            self.events.append({"name": name, "parent": parent, "start": start, "end": time.time(),
                                "rss_before": before, "rss_after": process_memory()["VmRSS"], **details})

    def finish(self) -> list[dict]:
        """The events with each one's peak resident memory (from the samples in it)."""
        self._stop.set()
        self._sampler.join()
        for event in self.events:
            inside = [s for s in self.samples if event["start"] <= s[0] <= event["end"]]
            if inside:
                event["peak_anon"] = max(s[1] for s in inside)
                event["peak_rss"] = max(s[1] + s[2] for s in inside)
        return self.events


def traced_job(argv: list[str], started: float) -> int:
    """Run ``python ARGV`` (a workflow step when ARGV is ``-m scripts …``) timing its
    phases; appends one JSON line to ``$BENCHMARK_TRACE``. Anything else is exec'd."""
    if argv[:2] != ["-m", "scripts"]:
        os.execv(sys.executable, [sys.executable, *argv])
    tracer = JobTracer()
    tracing.install(tracer)
    step = argv[2]
    status = 1
    try:
        with tracer.phase("imports: project, numpy, pandas"):
            from scripts import __main__ as cli
        if step == "train":
            with tracer.phase("import tensorflow + keras"):
                import keras  # noqa: F401
                import tensorflow  # noqa: F401
        with tracer.phase(f"step {step}"):
            status = cli.main(argv[2:])
    finally:
        tracing.install(None)
        trace = {"job": os.environ.get("BENCHMARK_JOB_ID", str(os.getpid())), "argv": argv[2:],
                 "launched": float(os.environ.get("BENCHMARK_JOB_START", started)), "python_started": started,
                 "events": tracer.finish(), "hwm_mb": process_memory()["VmHWM"], "status": status,
                 "finished": time.time()}
        with open(os.environ["BENCHMARK_TRACE"], "a") as handle:
            handle.write(json.dumps(trace) + "\n")
    return status


# The `python` that Snakemake's jobs find first on PATH: times each call and the
# interpreter's exit (which the job's own tracer cannot see).
PYTHON_SHIM = """#!/usr/bin/env bash
export BENCHMARK_JOB_START=$EPOCHREALTIME BENCHMARK_JOB_ID=$$
{python} -c {boot} "$@"
status=$?
printf '{{"job": "%s", "exited": %s}}\\n' "$$" "$EPOCHREALTIME" >> "$BENCHMARK_TRACE"
exit $status
"""


def python_shim(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name in ("python", "python3"):
        shim = folder / name
        shim.write_text(PYTHON_SHIM.format(python=shlex.quote(sys.executable), boot=shlex.quote(TRACE_BOOT)))
        shim.chmod(0o755)
    return folder


def read_traces(path: Path) -> list[dict]:
    """One dict per traced job: its tracer record merged with the shim's exit line."""
    records: dict[str, dict] = {}
    for line in path.read_text().splitlines() if path.exists() else []:
        entry = json.loads(line)
        records.setdefault(entry["job"], {}).update(entry)
    traced = [entry for entry in records.values() if "argv" in entry]  # not exec'd elsewhere
    for entry in traced:
        entry.setdefault("exited", entry["finished"])  # started without the shim
    return sorted(traced, key=lambda entry: entry["launched"])
