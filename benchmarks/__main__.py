"""Benchmarks on the bundled demo data: ``python -m benchmarks`` (``make benchmark``).

Every comparison is measured side by side in this one run; the rows are printed and
written to ``results/benchmarks/benchmark.{csv,md}``. Sections (``--only 3 4`` runs
some of them and keeps the other sections' rows of an earlier run):

1. input pipeline: our tf.data pipeline vs the same images as in-memory tensors vs
   ``ImageDataGenerator.flow_from_directory`` (tf_keras), seconds per epoch (medians);
2. frozen strategy: train jobs (the workflow's train CLI) on cached backbone features
   vs end to end (``frozen_feature_cache`` true/false), several seeds;
3. ``snakemake -n`` on a grid of about 1,000 jobs and at 2x/4x, and the share of the
   dry run spent in this project's own code (cProfile of one dry run);
4. a train job's fixed cost piece by piece (Python start, imports, TensorFlow, model
   build and weights, tracing, test pass and Grad-CAM, writing, exit) and its memory
   (peak RSS, anonymous vs file-backed, per phase), ResNet50 partial and scratch CNN;
5. the seed notebook's study end to end (``benchmarks.notebook_baseline``, one process)
   vs this workflow running the same study from a clean ``results/``, with the
   per-phase breakdown of both sides;
6. a pack of N seeds of one configuration in one process (``train-pack``, what a packed
   Slurm job runs) vs one train job per seed: each run's cost beyond its training
   compute (``train_seconds``: start-up, build, tracing, evaluation, writing).

``--quick`` shrinks everything (1 repeat, 1-2 epochs, 32 px, a small grid) for the
smoke test. Train jobs of sections 2, 4 and 5 run under a tracer
(``benchmarks.tracer``) that times the phases the project's code marks
(``scripts.common.tracing``) and samples the job's memory.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.tracer import TRACE_BOOT, python_shim, read_traces
from scripts.common import layout

# numpy, pandas, yaml, TensorFlow and the project's modules other than layout are
# imported inside the functions that use them: ``--help`` and the sections that do not
# need them stay fast.

PROJECT = Path(__file__).resolve().parents[1]
DEMO = PROJECT / "resources" / "demo" / "covid19-cxr-3class"
DEMO_MANIFEST = PROJECT / "config" / "manifests" / "demo.sha256"
SCHEMA = PROJECT / "workflow" / "schemas" / "config.schema.yaml"
SECTIONS = {"1": "1 input pipeline", "2": "2 frozen strategy", "3": "3 snakemake -n", "4": "4 train job cost",
            "5": "5 notebook vs workflow", "6": "6 runs packed in one job"}
# Where the train jobs this benchmark starts itself (outside Snakemake) write: the
# workflow's run folder of one demo run.
RUN_DIR = layout.RUN_DIR.format(dataset="demo", model="{model}", strategy="{strategy}", weights="none",
                                fraction="1.0", seed="{seed}")
AUGMENT = {"enabled": True, "flip": True, "rotation": 0.05, "shift": 0.05, "zoom": 0.1}
ROWS: list[dict] = []


def record(section: str, what: str, value: float, unit: str, note: str = "") -> None:
    row = {"section": SECTIONS[section], "measurement": what, "value": round(float(value), 3), "unit": unit,
           "note": note, "measured": time.strftime("%Y-%m-%d %H:%M")}
    ROWS.append(row)
    print(f"[{row['section']}] {what}: {row['value']} {unit} {note}", flush=True)


@dataclasses.dataclass(frozen=True)
class Scale:
    """How big each section's measurements are (``--quick`` shrinks all of them)."""

    image_size: int = 64
    batch_size: int = 32
    repeats: int = 3
    frozen_epochs: int = 10
    frozen_seeds: int = 5
    grid_datasets: int = 5  # x 5 models x 4 strategies x grid_seeds: 1,099 jobs
    grid_seeds: int = 12
    job_sizes: tuple[int, ...] = (64, 224)
    job_models: tuple[str, ...] = ("resnet50", "scratch_cnn")
    study_sizes: tuple[int, ...] = (64, 224)
    notebook_epochs: int = 5  # per phase: baseline, head, fine-tuning
    pack_runs: int = 8  # seeds of one configuration in one pack job
    pack_models: tuple[str, ...] = ("scratch_cnn", "resnet50")
    threads: int = len(os.sched_getaffinity(0))

    @classmethod
    def quick(cls) -> Scale:
        return cls(image_size=32, repeats=1, frozen_epochs=1, frozen_seeds=2, grid_datasets=1, grid_seeds=2,
                   job_sizes=(32,), job_models=("scratch_cnn",), study_sizes=(32,), notebook_epochs=1,
                   pack_runs=2, pack_models=("scratch_cnn",))


def median_seconds(action, repeats: int) -> float:
    """Median seconds of ``repeats`` calls after one untimed warm-up (graph tracing)."""
    action()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        action()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def default_config(**overrides) -> dict:
    """A config for the demo dataset with every schema default filled in."""
    from snakemake.utils import validate

    config = {"datasets": {"demo": {"path": str(DEMO), "manifest": str(DEMO_MANIFEST)}},
              "models": ["scratch_cnn"], "strategies": ["scratch"], "seeds": [1], "weights": "none",
              **overrides}
    config = json.loads(json.dumps(config))
    validate(config, str(SCHEMA))
    return config


class DemoData:
    """The demo dataset verified, decoded (per image size) and split (per seed) in
    ``work`` by the workflow's own stage functions."""

    def __init__(self, work: Path):
        from scripts import stages

        self.work, self.config = work / "data", default_config()
        self.index = self.work / "index.csv"
        stages.verify("demo", str(DEMO), str(DEMO_MANIFEST), "warn", None, str(self.index),
                      str(self.work / "verify.json"))
        self.leakage, self.copies = self.work / "leakage.csv", self.work / "copies.csv"
        stages.leakage(str(DEMO), str(self.index), "warn", str(self.leakage), str(self.copies))
        self.decode_seconds: dict[int, float] = {}

    def images(self, size: int) -> Path:
        from scripts import stages

        path = self.work / f"images_{size}px.npy"
        if not path.exists():
            started = time.perf_counter()
            stages.prepare(str(DEMO), str(self.index), size, str(path), str(self.work / f"images_{size}px.json"),
                           self.config["data"]["colour_overlays"])
            self.decode_seconds[size] = time.perf_counter() - started
        return path

    def split(self, seed: int) -> Path:
        from scripts import stages

        path = self.work / f"seed{seed}.csv"
        if not path.exists():
            settings = {key: self.config["data"][key]
                        for key in ("val_fraction", "leakage", "val_folder", "min_val_per_class")}
            stages.split(str(self.index), str(self.leakage), str(self.copies), seed, settings, str(path))
        return path

    def training_set(self, size: int, seed: int = 1):
        """``(uint8 images, int labels)`` of the training subset of ``seed``'s split."""
        import numpy as np
        import pandas as pd

        from scripts.data.splits import training_rows
        from scripts.train.training import classes_of

        split = pd.read_csv(self.split(seed), keep_default_na=False)
        labels = split["label"].map({c: i for i, c in enumerate(classes_of(split))}).to_numpy(np.int32)
        rows = training_rows(split, 1.0)
        return np.load(self.images(size))[rows], labels[rows]


# ---- Running jobs ------------------------------------------------------------------------
def job_environment(trace: Path | None = None, shim: Path | None = None) -> dict:
    """This interpreter's environment for a job (its ``bin/`` first on PATH, after the
    tracing ``shim`` if given); traced jobs append to ``trace``."""
    path = os.pathsep.join(str(p) for p in (shim, Path(sys.executable).parent) if p)
    env = {**os.environ, "PATH": f"{path}{os.pathsep}{os.environ['PATH']}", "PYTHONPATH": str(PROJECT)}
    return {**env, "BENCHMARK_TRACE": str(trace)} if trace else env


def run_measured(command: list[str], log: Path, env: dict | None = None) -> dict:
    """Run ``command`` to completion; its wall clock, CPU seconds and peak RSS (the
    largest of it and its descendants, from ``wait4``)."""
    log.parent.mkdir(parents=True, exist_ok=True)
    launched, started = time.time(), time.perf_counter()
    if env and "BENCHMARK_TRACE" in env:  # a traced job started without the shim
        env = {"BENCHMARK_JOB_START": repr(launched), **env}
    with open(log, "w") as output:
        process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT, env=env, cwd=PROJECT)
        _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - started
    if process.returncode:
        tail = log.read_text()[-4000:]
        raise RuntimeError(f"{shlex.join(command[:8])} ... failed ({process.returncode}), log {log}:\n{tail}")
    return {"launched": launched, "exited": launched + wall, "wall": wall,
            "cpu": usage.ru_utime + usage.ru_stime, "max_rss_mb": usage.ru_maxrss / 1024}


def train_settings(model: str, training: dict, weights: dict) -> str:
    """The ``--settings`` JSON of one run, as the workflow's ``run_settings`` builds it."""
    config = default_config(training=training)
    settings = dict(config["training"])
    if isinstance(settings["partial_stages"], dict):
        stages = settings["partial_stages"]
        settings["partial_stages"] = stages.get(model, stages["default"])
    return json.dumps({"training": settings, "weights": weights, "positive_class": None,
                       "evaluation": config["evaluation"], "gradcam": config["gradcam"]}, sort_keys=True)


def run_train_job(data: DemoData, work: Path, model: str, strategy: str, seed: int, training: dict,
                  weights: dict, threads: int, feature_cache: Path | None = None) -> dict:
    """One traced train job through the workflow's CLI; returns its measurements,
    trace and ``train.json``."""
    run_dir = work / RUN_DIR.format(model=model, strategy=strategy, seed=seed)
    trace_file = run_dir / "trace.jsonl"
    command = [sys.executable, "-c", TRACE_BOOT, "-m", "scripts", "train", "--dataset", "demo", "--model", model,
               "--strategy", strategy, "--weights-name", "none", "--fraction", "1.0", "--seed", str(seed),
               "--images", str(data.images(training["image_size"])), "--split", str(data.split(seed)),
               "--settings", train_settings(model, training, weights), "--checkpoint",
               str(run_dir / "checkpoint"), "--feature-cache", str(feature_cache or run_dir / "features"),
               "--outputs", json.dumps({name: str(run_dir / file) for name, file in layout.RUN_FILES.items()}),
               "--threads", str(threads)]
    result = run_measured(command, run_dir / "train.log", job_environment(trace_file))
    (trace,) = read_traces(trace_file)
    trace["exited"] = result["exited"]  # the interpreter's exit included
    return {**result, "trace": trace, "info": json.loads((run_dir / layout.RUN_FILES["info"]).read_text()),
            "run_dir": run_dir}


def run_pack_job(data: DemoData, work: Path, model: str, strategy: str, seeds: list[int], training: dict,
                 weights: dict, threads: int) -> dict:
    """The seeds as one ``train-pack`` job through the workflow's CLI; returns its
    measurements and each run's ``train.json``."""
    run_dirs = {seed: work / RUN_DIR.format(model=model, strategy=strategy, seed=seed) for seed in seeds}
    members = [{"seed": seed, "split": str(data.split(seed)), "checkpoint": str(run_dirs[seed] / "checkpoint"),
                "log": str(run_dirs[seed] / "train.log"),
                "outputs": {name: str(run_dirs[seed] / file) for name, file in layout.RUN_FILES.items()}}
               for seed in seeds]
    command = [sys.executable, "-m", "scripts", "train-pack", "--dataset", "demo", "--model", model,
               "--strategy", strategy, "--weights-name", "none", "--fraction", "1.0",
               "--images", str(data.images(training["image_size"])),
               "--settings", train_settings(model, training, weights), "--feature-cache", str(work / "features"),
               "--record", str(work / "pack.json"), "--members", json.dumps(members), "--threads", str(threads)]
    result = run_measured(command, work / "pack.log", job_environment())
    return {**result, "infos": [json.loads((run_dirs[seed] / layout.RUN_FILES["info"]).read_text())
                                for seed in seeds]}


# ---- Reading a traced job ----------------------------------------------------------------
def events(trace: dict, name: str, parent: str | None = None) -> list[dict]:
    return [e for e in trace["events"] if e["name"] == name and (parent is None or e["parent"] == parent)]


def seconds(trace: dict, name: str, parent: str | None = None) -> float:
    return sum(e["end"] - e["start"] for e in events(trace, name, parent))


def tracing_estimate(calls: list[dict], work) -> float | None:
    """Extra seconds of the first call over what its ``work`` costs at the steady rate of
    the later calls (``work(call)``: batches or epochs); None with a single call."""
    if len(calls) < 2:
        return None
    later = calls[1:]
    rate = sum(c["end"] - c["start"] for c in later) / max(sum(work(c) for c in later), 1)
    first = calls[0]
    return max(0.0, first["end"] - first["start"] - rate * work(first))


def job_pieces(trace: dict) -> dict[str, float | None]:
    """Where a train job's wall clock goes, piece by piece (seconds; None where a
    piece cannot be estimated)."""
    batch = json.loads(trace["argv"][trace["argv"].index("--settings") + 1])["training"]["batch_size"]
    pieces = {
        "python start (interpreter, site, tracer)": trace["python_started"] - trace["launched"],
        **{name: seconds(trace, name) for name in (
            "imports: project, numpy, pandas", "import tensorflow + keras", "configure tensorflow",
            "weights file hash check", "build model (+ load weights)")},
        "inference pass: first-call overhead (tracing, warm-up)": tracing_estimate(
            events(trace, "inference pass"), lambda call: -(-call["images"] // batch)),
        "feature extraction (all images, first inference call included)": seconds(
            trace, "feature cache: extract or load"),
        "linear probe + head epochs on cached features (extraction excluded)": seconds(
            trace, "linear probe + head epochs on cached features"),
        "checkpoint save after the head warm-up": seconds(trace, "checkpoint save", "training.train"),
        **end_to_end_pieces(trace),
        "test + validation pass, Grad-CAM, metrics (evaluate)": seconds(trace, "evaluate"),
        "save model weights": seconds(trace, "save model weights"),
    }
    step = "step train"
    inside = sum(seconds(trace, name, step) for name in (
        "configure tensorflow", "weights file hash check", "training.train", "evaluate", "save model weights"))
    pieces["read inputs, external test passes, write the run's files, clear checkpoint"] = seconds(trace, step) - inside
    pieces["interpreter exit"] = trace["exited"] - trace["finished"]
    return pieces


def end_to_end_pieces(trace: dict) -> dict[str, float | None]:
    """The end-to-end epochs and what they consist of."""
    phase = "end-to-end epochs"
    total = seconds(trace, phase)
    parts = {
        "... of which keras fit": seconds(trace, "keras fit", phase),
        "... of which validation passes (forward only)": seconds(trace, "inference pass", phase),
        "... of which checkpoint saves": seconds(trace, "checkpoint save", phase),
        "... of which checkpoint reloads (load_weights)": seconds(trace, "load weights", phase),
    }
    parts["... of which the rest (set_trainable, compile, datasets)"] = total - sum(parts.values())
    return {"end-to-end epochs (validation passes, checkpoints included)": total, **parts,
            "train step: first-epoch overhead (tracing, warm-up)": tracing_estimate(
                events(trace, "keras fit", phase), lambda call: 1)}


def start_up_seconds(trace: dict) -> float:
    """From launch to the first line of the step's own work (model built for train)."""
    pieces = job_pieces(trace) if trace["argv"][0] == "train" else {}
    start = trace["python_started"] - trace["launched"] + seconds(trace, "imports: project, numpy, pandas")
    return start + sum(pieces.get(name) or 0 for name in (
        "import tensorflow + keras", "configure tensorflow", "weights file hash check",
        "build model (+ load weights)"))


# ---- 1: input pipeline -------------------------------------------------------------------
def bench_input_pipelines(data: DemoData, scale: Scale) -> None:
    import numpy as np

    from scripts.train.input_pipeline import augmentation, train_dataset

    x, y = data.training_set(scale.image_size)
    weights = np.ones(len(y), np.float32)
    augment = augmentation(AUGMENT)
    for name in ("scratch_cnn", "resnet50"):
        bench_one_model(name, x, y, augment, scale)
    epoch = iter(range(10_000))
    ours = median_seconds(lambda: list(train_dataset(x, y, weights, scale.batch_size, next(epoch), augment)),
                          scale.repeats)
    stream, steps = notebook_flow(scale.image_size, scale.batch_size)
    legacy = median_seconds(lambda: [next(stream) for _ in range(steps)], scale.repeats)
    record("1", "input only (augmented batches of one epoch, no model): ours", ours, "s/epoch")
    record("1", "input only: flow_from_directory", legacy, "s/epoch")
    record("1", "input only: speed-up of our pipeline", legacy / ours, "x",
           "what a GPU, where the model step is cheap, would see")
    record("1", f"our one-off decode of all images at {scale.image_size} px", data.decode_seconds.get(
        scale.image_size, 0.0), "s", "prepare_images job, once per dataset x size")


def compiled_model(name: str, image_size: int, n_classes: int):
    """``scratch_cnn`` all trainable, or ResNet50 with its backbone frozen."""
    import keras

    from scripts.train.models import build_model, set_trainable

    keras.utils.set_random_seed(1)
    model, backbone = build_model(name, image_size, n_classes, None, dropout=0.3, bn_momentum=0.7)
    set_trainable(model, backbone, "all" if name == "scratch_cnn" else "head")
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    return model


def notebook_flow(image_size: int, batch_size: int):
    """The notebook's input: ``flow_from_directory`` with rescale and the same
    augmentation; an endless ``(images, int labels)`` stream and its steps per epoch."""
    import tf_keras

    from benchmarks.notebook_baseline import AUGMENTATION

    generator = tf_keras.preprocessing.image.ImageDataGenerator(rescale=1 / 255, **AUGMENTATION)
    flow = generator.flow_from_directory(str(DEMO / "train"), target_size=(image_size, image_size),
                                         batch_size=batch_size, class_mode="sparse", seed=1)
    stream = ((images, labels.astype("int32")) for images, labels in flow)
    return stream, len(flow)


def bench_one_model(name: str, x, y, augment, scale: Scale) -> None:
    import keras
    import numpy as np
    import tensorflow as tf

    from scripts.train.input_pipeline import train_dataset

    n_classes, size = int(y.max()) + 1, scale.image_size
    label = f"{name} ({'all trainable' if name == 'scratch_cnn' else 'frozen backbone'}), {size} px"
    weights = np.ones(len(y), np.float32)
    model = compiled_model(name, size, n_classes)
    epoch = iter(range(10_000))
    ours = median_seconds(lambda: model.fit(train_dataset(x, y, weights, scale.batch_size, next(epoch), augment),
                                            verbose=0), scale.repeats)
    record("1", f"{label}: our tf.data pipeline", ours, "s/epoch")

    # The compute-bound limit: the images as float tensors in memory, augmentation as
    # Keras layers inside the model (keras.io style), no input pipeline.
    layers = [keras.layers.RandomFlip("horizontal"), keras.layers.RandomRotation(AUGMENT["rotation"]),
              keras.layers.RandomTranslation(AUGMENT["shift"], AUGMENT["shift"]),
              keras.layers.RandomZoom(AUGMENT["zoom"])]
    in_memory = keras.Sequential([keras.Input((size, size, 3)), *layers, compiled_model(name, size, n_classes)])
    in_memory.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy",
                      metrics=["accuracy"])
    x_tensor, y_tensor = tf.constant(x, tf.float32), tf.constant(y)
    limit = median_seconds(lambda: in_memory.fit(x_tensor, y_tensor, batch_size=scale.batch_size, shuffle=True,
                                                 verbose=0), scale.repeats)
    record("1", f"{label}: in-memory tensors", limit, "s/epoch")
    record("1", f"{label}: throughput ours / in-memory", limit / ours, "x", "target >= 0.9")

    stream, steps = notebook_flow(size, scale.batch_size)
    notebook = compiled_model(name, size, n_classes)
    legacy = median_seconds(lambda: notebook.fit(stream, steps_per_epoch=steps, verbose=0), scale.repeats)
    record("1", f"{label}: flow_from_directory", legacy, "s/epoch", "decodes every image every epoch")
    record("1", f"{label}: speed-up of our pipeline over flow_from_directory", legacy / ours, "x")


# ---- 2: frozen strategy on cached features vs end to end ---------------------------------
def stand_in_weights(path: Path) -> dict:
    """A ResNet50 ``*_notop.h5`` in Keras's published (legacy h5) layout with random
    values, standing in for the ImageNet file that cannot be downloaded here: loading
    and hashing cost the same, and the frozen path's cost does not depend on the values."""
    if not path.exists():
        import h5py
        import keras
        from keras.src.legacy.saving.legacy_h5_format import save_weights_to_hdf5_group

        keras.utils.set_random_seed(3)
        with h5py.File(path, "w") as handle:
            save_weights_to_hdf5_group(handle, keras.applications.ResNet50(include_top=False, weights=None))
    return {"source": "file", "path": str(path)}


def bench_frozen_cache(data: DemoData, work: Path, scale: Scale) -> None:
    weights = stand_in_weights(work / "resnet50_standin_notop.h5")
    training = {"image_size": scale.image_size, "batch_size": scale.batch_size, "epochs": scale.frozen_epochs,
                "early_stopping_patience": 0, "learning_rate": 1e-3}
    seeds = range(1, scale.frozen_seeds + 1)
    jobs = {}
    for cached in (False, True):
        path = "cached features" if cached else "end to end"
        folder = work / ("frozen-cached" if cached else "frozen-end-to-end")
        jobs[cached] = [run_train_job(data, folder, "resnet50", "frozen", seed,
                                      {**training, "frozen_feature_cache": cached}, weights, scale.threads,
                                      folder / "features") for seed in seeds]
        label = f"ResNet50 frozen, {scale.frozen_epochs} epochs x {len(seeds)} seeds, {path}"
        record("2", f"{label}: training time", sum(j["info"]["train_seconds"] for j in jobs[cached]), "s",
               "sum over seeds (train.json train_seconds)")
        record("2", f"{label}: whole jobs", sum(j["wall"] for j in jobs[cached]), "s",
               "start, build, train, test + Grad-CAM, exit")
        if cached:
            record("2", f"{label}: seeds that reused the shared feature cache",
                   sum(bool(j["info"].get("feature_cache_reused")) for j in jobs[cached]), f"of {len(seeds)}")
    record("2", "training time, end to end / cached",
           sum(j["info"]["train_seconds"] for j in jobs[False]) / sum(j["info"]["train_seconds"] for j in jobs[True]),
           "x", "target >= 10")
    record("2", "whole jobs, end to end / cached",
           sum(j["wall"] for j in jobs[False]) / sum(j["wall"] for j in jobs[True]), "x")


# ---- 3: snakemake -n ---------------------------------------------------------------------
def grid_config(work: Path, datasets: int, seeds: int) -> Path:
    import yaml

    config = {"datasets": {f"site{i}": {"path": str(DEMO), "manifest": str(DEMO_MANIFEST)} for i in range(datasets)},
              "models": ["scratch_cnn", "vgg16", "resnet50", "efficientnetb0", "densenet121"],
              "strategies": ["scratch", "frozen", "partial", "full"], "seeds": list(range(1, seeds + 1)),
              "weights": "none"}
    path = work / f"grid_{datasets}x{seeds}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def dry_run_command(work: Path, config: Path) -> list[str]:
    return ["-m", "snakemake", "-n", "--quiet", "rules", "-s", str(PROJECT / "workflow" / "Snakefile"),
            "--directory", str(work), "--configfile", str(config), "--cores", "1"]


def bench_dry_run(work: Path, scale: Scale) -> None:
    directory = work / "dry-run"
    directory.mkdir(parents=True, exist_ok=True)
    for factor in (1, 2, 4):
        seeds = scale.grid_seeds * factor
        command = [sys.executable, *dry_run_command(directory, grid_config(work, scale.grid_datasets, seeds))]
        times, output = [], ""
        for _ in range(scale.repeats):
            started = time.perf_counter()
            done = subprocess.run(command, capture_output=True, text=True, check=True, cwd=PROJECT)
            times.append(time.perf_counter() - started)
            output = done.stdout + done.stderr
        jobs = next(int(line.split()[-1]) for line in output.splitlines() if line.startswith("total"))
        record("3", f"{scale.grid_datasets} datasets x 5 models x 4 strategies x {seeds} seeds: {jobs} jobs",
               statistics.median(times), "s", "target < 5 s" if factor == 1 else f"{factor}x the grid")
    profile_dry_run(work, directory, scale)


def profile_dry_run(work: Path, directory: Path, scale: Scale) -> None:
    profile = work / "dry-run.prof"
    config = grid_config(work, scale.grid_datasets, scale.grid_seeds)
    subprocess.run([sys.executable, "-m", "cProfile", "-o", str(profile), *dry_run_command(directory, config)],
                   capture_output=True, text=True, check=True, cwd=PROJECT)
    total, own, top = own_code_time(profile)
    record("3", "dry run of the 1x grid under cProfile: profiled time", total, "s")
    record("3", "... of which in this project's code (workflow/*.smk, scripts/*.py)", own, "s",
           "inclusive of what it calls, each call counted once")
    record("3", "... our code's share of the dry run", 100 * own / total, "%")
    for name, value in top:
        record("3", f"... own: {name}", value, "s", "inclusive")


def own_code_time(profile: Path, top: int = 5) -> tuple[float, float, list[tuple[str, float]]]:
    """``(profiled seconds, seconds in this project's code, its top functions)``.

    A project function counts with everything it calls, for its calls from code that
    is not ours (calls from our own functions are inside those already; so are calls
    through a builtin that our code calls, such as a generator expression consumed by
    ``sorted``). The module
    bodies of the Snakefile and ``.smk`` files are also Snakemake's rule registration:
    they count with their own statements and their calls to anything but
    ``snakemake/workflow.py`` (the rule decorators and ``include``).
    """
    import pstats

    stats = pstats.Stats(str(profile))
    stats.calc_callees()
    roots = tuple(f"{PROJECT / folder}{os.sep}" for folder in ("workflow", "scripts"))

    def ours(key) -> bool:
        return key[0].startswith(roots)

    def rule_file_body(key) -> bool:
        return ours(key) and key[2] == "<module>" and not key[0].endswith(".py")

    def from_ours(caller) -> bool:
        builtin = caller[0] == "~" and caller in stats.stats
        return ours(caller) or (builtin and any(ours(c) for c in stats.stats[caller][4]))

    inclusive: dict = {}
    for key, (_, _, own_time, _, callers) in stats.stats.items():
        if rule_file_body(key):
            inclusive[key] = own_time + sum(
                edge[3] for callee, edge in stats.all_callees[key].items()
                if not callee[0].endswith(f"snakemake{os.sep}workflow.py") and not rule_file_body(callee))
        elif ours(key):
            inclusive[key] = sum(edge[3] for caller, edge in callers.items() if not from_ours(caller))
    ranked = sorted(inclusive.items(), key=lambda item: -item[1])[:top]
    names = [(f"`{Path(k[0]).relative_to(PROJECT)}:{k[1]} {k[2]}`", v) for k, v in ranked]
    return stats.total_tt, sum(inclusive.values()), names


# ---- 4: a train job's fixed cost and memory ----------------------------------------------
JOB_RUNS = {"resnet50": ("partial", "ResNet50 partial"), "scratch_cnn": ("scratch", "scratch CNN")}


def bench_train_job(data: DemoData, work: Path, scale: Scale) -> None:
    """Each piece of one train job, and where its memory goes. Two end-to-end epochs
    (the first carries the train step's tracing) and, for ResNet50, one head epoch on
    cached features; the backbone loads the stand-in ``*_notop.h5``."""
    weights = {"source": "none"}
    if "resnet50" in scale.job_models:
        weights = stand_in_weights(work / "resnet50_standin_notop.h5")
    for size in scale.job_sizes:
        for model in scale.job_models:
            strategy, label = JOB_RUNS[model]
            training = {"image_size": size, "batch_size": scale.batch_size, "early_stopping_patience": 0,
                        "epochs": 3 if strategy == "partial" else 2, "warmup_epochs": 1, "partial_stages": 1}
            job = run_train_job(data, work / f"job-{size}px", model, strategy, 1, training,
                                weights if model != "scratch_cnn" else {"source": "none"}, scale.threads)
            record_job_pieces(f"{label} {size} px", job)
            record_job_memory(f"{label} {size} px", job, data.images(size))


def record_job_pieces(label: str, job: dict) -> None:
    pieces = job_pieces(job["trace"])
    for name, value in pieces.items():
        if value is not None and (value > 0 or "tracing" in name):
            record("4", f"{label}: {name}", value, "s",
                   "estimate: the first call less the later calls' steady rate" if "tracing" in name else "")
    record("4", f"{label}: whole job", job["wall"], "s", f"CPU {job['cpu']:.1f} s")
    fixed = start_up_seconds(job["trace"]) + sum(pieces[name] or 0 for name in (
        "inference pass: first-call overhead (tracing, warm-up)",
        "train step: first-epoch overhead (tracing, warm-up)",
        "test + validation pass, Grad-CAM, metrics (evaluate)", "save model weights",
        "read inputs, external test passes, write the run's files, clear checkpoint", "interpreter exit"))
    record("4", f"{label}: fixed cost (all but the epochs and feature extraction)", fixed, "s",
           "start-up, build, both tracings, evaluation, writing, exit")


def record_job_memory(label: str, job: dict, images_path: Path) -> None:
    """Peak RSS per phase, and the sizes of the arrays the job holds."""
    import numpy as np

    trace, info = job["trace"], job["info"]
    record("4", f"{label}: peak RSS (VmHWM)", trace["hwm_mb"], "MB",
           f"train.json peak_rss_mb {info.get('peak_rss_mb')}")
    after = {e["name"]: e["rss_after"] for e in trace["events"]}
    record("4", f"{label}: RSS after import tensorflow + keras", after["import tensorflow + keras"], "MB")
    record("4", f"{label}: RSS after model build", after["build model (+ load weights)"], "MB")
    for name in ("feature cache: extract or load", "linear probe + head epochs on cached features",
                 "end-to-end epochs", "evaluate"):
        found = [e for e in events(trace, name) if "peak_rss" in e]
        if found:
            peak = max(found, key=lambda e: e["peak_rss"])
            record("4", f"{label}: peak RSS during {name}", peak["peak_rss"], "MB",
                   f"anonymous {peak['peak_anon']:.0f} MB, the rest file-backed (libraries, mmap'd cache)")
    datasets = events(trace, "train_dataset")
    if datasets:
        growth = statistics.median(e["rss_after"] - e["rss_before"] for e in datasets)
        record("4", f"{label}: RSS growth per train_dataset call", growth, "MB",
               "median over epochs; its tf.constant copies")
    images = np.load(images_path, mmap_mode="r")
    megabytes_per_image = images[0].nbytes / 2**20
    record("4", f"{label}: decoded image cache (mmap'd file)", images.nbytes / 2**20, "MB",
           f"{len(images)} images, uint8")
    record("4", f"{label}: train + val images copied out of the cache",
           (info["n_train"] + info["n_val"]) * megabytes_per_image, "MB", "size; held for the whole job")
    record("4", f"{label}: train images copied again by tf.constant per train_dataset call",
           info["n_train"] * megabytes_per_image, "MB", "size")
    if info.get("feature_cache"):
        features = np.load(info["feature_cache"], mmap_mode="r")
        record("4", f"{label}: pooled features of every image", features.nbytes / 2**20, "MB",
               f"{features.shape} {features.dtype}; plus train/val row copies")
    with np.load(job["run_dir"] / layout.RUN_FILES["gradcam"]) as gradcam:
        record("4", f"{label}: Grad-CAM maps of the test images", gradcam["cams"].nbytes / 2**20, "MB",
               f"{gradcam['cams'].shape} {gradcam['cams'].dtype}")


# ---- 5: the seed notebook's study vs the workflow ----------------------------------------
def bench_notebook_study(work: Path, scale: Scale, out: Path) -> None:
    for size in scale.study_sizes:
        notebook = run_notebook(work / f"notebook-{size}px", size, scale)
        workflow = run_workflow_study(work / f"workflow-{size}px", size, scale)
        (out / f"study_trace_{size}px.json").write_text(json.dumps({"notebook": notebook, "workflow": workflow},
                                                                   indent=1, default=str))
        record("5", f"{size} px: notebook wall clock (one process)", notebook["wall"], "s",
               f"CPU {notebook['cpu']:.0f} s, peak RSS {notebook['max_rss_mb']:.0f} MB")
        record("5", f"{size} px: workflow wall clock (clean results/, verify to report)", workflow["wall"], "s",
               f"CPU {workflow['cpu']:.0f} s, peak RSS of one job {workflow['max_job_rss_mb']:.0f} MB")
        record("5", f"{size} px: notebook / workflow", notebook["wall"] / workflow["wall"], "x",
               "target >= 1.5")
        record("5", f"{size} px: CPU seconds, notebook / workflow", notebook["cpu"] / workflow["cpu"], "x",
               "less sensitive to other load on the machine than wall clock")
        record_notebook_phases(size, notebook)
        record_workflow_phases(size, workflow)


def run_notebook(work: Path, size: int, scale: Scale) -> dict:
    timings = work / "timings.json"
    epochs = str(scale.notebook_epochs)
    command = [sys.executable, "-m", "benchmarks.notebook_baseline", "--data", str(DEMO), "--image-size", str(size),
               "--output", str(timings), "--batch-size", str(scale.batch_size), "--baseline-epochs", epochs,
               "--head-epochs", epochs, "--finetune-epochs", epochs]
    result = run_measured(command, work / "notebook.log", job_environment())
    return {**result, **json.loads(timings.read_text())}


def study_config(size: int, scale: Scale) -> dict:
    """The notebook's study as a workflow config: the scratch CNN trains
    ``notebook_epochs`` epochs; ResNet50 partial warms up its head as many, then
    fine-tunes as many; ResNet50 from scratch (in the models × strategies grid, not in
    the notebook) is excluded."""
    epochs = scale.notebook_epochs
    return {"datasets": {"demo": {"path": str(DEMO), "manifest": str(DEMO_MANIFEST)}},
            "models": ["scratch_cnn", "resnet50"], "strategies": ["scratch", "partial"], "seeds": [1],
            "exclude": [{"model": "resnet50", "strategy": "scratch"}], "weights": "none",
            "training": {"image_size": size, "batch_size": scale.batch_size,
                         "epochs": {"default": 2 * epochs, "scratch_cnn": epochs},
                         "warmup_epochs": epochs, "partial_stages": 1, "early_stopping_patience": 0,
                         "learning_rate": 1e-3, "finetune_learning_rate": 1e-5}}


def run_workflow_study(work: Path, size: int, scale: Scale) -> dict:
    """The study through Snakemake (``snakemake --cores 2``, verify through report) from
    an empty working directory."""
    import yaml

    work.mkdir(parents=True)
    config = work / "config.yaml"
    config.write_text(yaml.safe_dump(study_config(size, scale)))
    trace = work / "trace.jsonl"
    env = job_environment(trace, python_shim(work / "bin"))
    snakemake = [sys.executable, "-m", "snakemake", "-s", str(PROJECT / "workflow" / "Snakefile"), "--directory",
                 str(work), "--configfile", str(config), "--cores", "2"]
    run = run_measured(snakemake, work / "snakemake.log", env)
    if not (work / "results" / "report.html").is_file():
        raise RuntimeError(f"the study in {work} wrote no report")
    jobs = read_traces(trace)
    return {"wall": run["exited"] - run["launched"], "cpu": run["cpu"], "invocations": [run], "jobs": jobs,
            "max_job_rss_mb": max(job.get("hwm_mb", 0) for job in jobs)}


# The notebook's fit phases and the keys of their epoch times (benchmarks.notebook_baseline).
FIT_PHASES = {"baseline CNN: fit": "baseline", "ResNet50: fit head": "head", "ResNet50: fine-tune": "finetune"}


def record_notebook_phases(size: int, notebook: dict) -> None:
    record("5", f"{size} px notebook: python start", notebook["started"] - notebook["launched"], "s")
    for phase in notebook["phases"]:
        key = next((key for prefix, key in FIT_PHASES.items() if phase["name"].startswith(prefix)), None)
        epochs = notebook["epochs"].get(key, [])
        note = (f"first epoch {epochs[0]:.1f} s, later ones median {statistics.median(epochs[1:]):.1f} s"
                if len(epochs) > 1 else "")
        record("5", f"{size} px notebook: {phase['name']}", phase["end"] - phase["start"], "s", note)
    record("5", f"{size} px notebook: interpreter exit", notebook["exited"] - notebook["finished"], "s")


def job_label(job: dict) -> str:
    argv = job["argv"]
    if argv[0] == "train":
        return f"train {argv[argv.index('--model') + 1]} {argv[argv.index('--strategy') + 1]}"
    return argv[0]


def idle_seconds(start: float, end: float, jobs: list[dict]) -> float:
    """Seconds in ``[start, end]`` during which no job ran."""
    busy, cursor = 0.0, start
    for job in sorted(jobs, key=lambda j: j["launched"]):
        job_start, job_end = max(job["launched"], cursor), min(job["exited"], end)
        if job_end > job_start:
            busy += job_end - job_start
            cursor = job_end
    return end - start - busy


def single_job_seconds(jobs: list[dict]) -> float:
    """Seconds during which exactly one of ``jobs`` ran."""
    edges = sorted([(j["launched"], 1) for j in jobs] + [(j["exited"], -1) for j in jobs])
    alone, running, previous = 0.0, 0, None
    for moment, change in edges:
        if running == 1:
            alone += moment - previous
        running, previous = running + change, moment
    return alone


def record_workflow_phases(size: int, workflow: dict) -> None:
    """The workflow's wall clock, invocation by invocation: Snakemake's start-up,
    every job (start-up / work / exit), the time no job ran, Snakemake's finish."""
    prefix = f"{size} px workflow"
    for invocation in workflow["invocations"]:
        jobs = [j for j in workflow["jobs"] if invocation["launched"] <= j["launched"] <= invocation["exited"]]
        record("5", f"{prefix}: snakemake (data, the two runs, plan, aggregate, report)", invocation["wall"], "s")
        if not jobs:
            continue
        first, last = jobs[0]["launched"], max(j["exited"] for j in jobs)
        record("5", f"{prefix}: ... snakemake start until its first job", first - invocation["launched"], "s",
               "imports, Snakefile, DAG")
        for job in jobs:
            record_job_row(prefix, job)
        record("5", f"{prefix}: ... no job running between its first and last job", idle_seconds(first, last, jobs),
               "s", "scheduling, job metadata, the in-process plan rule")
        record("5", f"{prefix}: ... snakemake after its last job", invocation["exited"] - last, "s")
        trains = [j for j in jobs if j["argv"][0] == "train"]
        if len(trains) > 1:
            threads = {job_label(j): j["argv"][j["argv"].index("--threads") + 1] for j in trains}
            record("5", f"{prefix}: ... time with only one train job running", single_job_seconds(trains), "s",
                   f"threads per job {threads}: cores idle meanwhile")


def record_job_row(prefix: str, job: dict) -> None:
    label, wall = job_label(job), job["exited"] - job["launched"]
    start = start_up_seconds(job)
    exit_ = job["exited"] - job["finished"]
    record("5", f"{prefix}: ... job {label}", wall, "s",
           f"start-up {start:.1f} s, work {wall - start - exit_:.1f} s, exit {exit_:.1f} s, "
           f"peak RSS {job.get('hwm_mb', 0):.0f} MB")
    if job["argv"][0] == "train":
        for name, value in job_pieces(job).items():
            if value:
                record("5", f"{prefix}: ... ... {label}: {name}", value, "s")


# ---- 6: runs packed in one job ----------------------------------------------------------
def bench_pack(data: DemoData, work: Path, scale: Scale) -> None:
    """N seeds of one configuration: N train jobs (one process each) vs one pack job.
    A run's overhead is its job's wall clock less its ``train_seconds`` (the epochs,
    feature extraction included); in the pack, the overhead of each run after the first
    is the pack's overhead less one single job's, spread over the other N - 1 runs."""
    seeds = list(range(1, scale.pack_runs + 1))
    weights = stand_in_weights(work / "resnet50_standin_notop.h5") if "resnet50" in scale.pack_models else {}
    for model in scale.pack_models:
        strategy, label = JOB_RUNS[model]
        training = {"image_size": scale.image_size, "batch_size": scale.batch_size, "early_stopping_patience": 0,
                    "epochs": 2, "warmup_epochs": 1, "partial_stages": 1}
        run_weights = {"source": "none"} if model == "scratch_cnn" else weights
        singles = []
        for seed in seeds:
            job = run_train_job(data, work / f"single-{model}", model, strategy, seed, training, run_weights,
                                scale.threads)
            singles.append(job["wall"] - job["info"]["train_seconds"])
        pack = run_pack_job(data, work / f"pack-{model}", model, strategy, seeds, training, run_weights,
                            scale.threads)
        pack_overhead = pack["wall"] - sum(info["train_seconds"] for info in pack["infos"])
        single = statistics.median(singles)
        n = len(seeds)
        where = f"{label}, {scale.image_size} px, {n} seeds"
        record("6", f"{where}: one job per run, overhead per run", single, "s",
               "wall clock less train_seconds, median over the jobs")
        record("6", f"{where}: one job per run, overhead in all", sum(singles), "s", "summed over the jobs")
        record("6", f"{where}: pack job, overhead in all", pack_overhead, "s", "wall clock less train_seconds")
        record("6", f"{where}: pack job, overhead per additional run", (pack_overhead - single) / max(n - 1, 1),
               "s", "(pack overhead - one job's) / (N - 1)")
        record("6", f"{where}: pack job, peak RSS", pack["max_rss_mb"], "MB")


def describe_machine() -> str:
    from importlib import metadata

    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    gpus = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True).stdout.strip() \
        if any(Path(p, "nvidia-smi").exists() for p in os.environ["PATH"].split(os.pathsep)) else ""
    load = ", ".join(f"{v:.1f}" for v in os.getloadavg())
    return (f"{cpu}, {len(os.sched_getaffinity(0))} CPUs (load average {load} at the start), "
            f"{'GPU: ' + gpus if gpus else 'no GPU'}; Python {platform.python_version()}, "
            f"TensorFlow {metadata.version('tensorflow')}, Snakemake {metadata.version('snakemake')}")


def write_results(out: Path, sections: set[str], only: bool, machine: str) -> None:
    import pandas as pd

    from scripts.common import fsutil

    table = pd.DataFrame(ROWS, columns=["section", "measurement", "value", "unit", "note", "measured"])
    if only and (out / "benchmark.csv").exists():  # keep the sections not rerun
        previous = pd.read_csv(out / "benchmark.csv", keep_default_na=False)
        rerun = {SECTIONS[s] for s in sections}
        # sections not rerun now; rows of sections this version no longer has are dropped
        kept = previous[previous["section"].isin(set(SECTIONS.values()) - rerun)]
        table = pd.concat([table, kept]).sort_values("section", kind="stable")
    fsutil.write_csv(out / "benchmark.csv", table)
    parts = [f"# Benchmarks\n\nMachine: {machine}\n\nMeasured with `python -m benchmarks` "
             "(the `measured` column says when).\n"]
    for section, rows in table.groupby("section", sort=True):
        parts.append(f"\n## {section}\n\n{rows.drop(columns='section').to_markdown(index=False)}\n")
    fsutil.write_text(out / "benchmark.md", "".join(parts))
    print(f"\nwrote {out / 'benchmark.csv'} and {out / 'benchmark.md'}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", default="results/benchmarks", help="folder for benchmark.csv/.md")
    parser.add_argument("--only", nargs="+", choices=sorted(SECTIONS), help="sections to run (default all)")
    parser.add_argument("--quick", action="store_true", help="shrink everything (smoke test)")
    parser.add_argument("--study-sizes", type=int, nargs="+", help="image sizes of section 5 (default 64 224)")
    parser.add_argument("--keep", action="store_true", help="keep the work folder (its path is printed)")
    args = parser.parse_args(argv)
    scale = Scale.quick() if args.quick else Scale()
    if args.study_sizes:
        scale = dataclasses.replace(scale, study_sizes=tuple(args.study_sizes))
    sections = set(args.only or SECTIONS)
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    machine = describe_machine()
    print(f"machine: {machine}", flush=True)
    work = Path(tempfile.mkdtemp(prefix="cxr-benchmark-"))
    try:
        data = DemoData(work)
        if "1" in sections:
            bench_input_pipelines(data, scale)
        if "2" in sections:
            bench_frozen_cache(data, work, scale)
        if "3" in sections:
            bench_dry_run(work, scale)
        if "4" in sections:
            bench_train_job(data, work, scale)
        if "5" in sections:
            bench_notebook_study(work, scale, out)
        if "6" in sections:
            bench_pack(data, work, scale)
    finally:
        if args.keep:
            print(f"work folder kept: {work}")
        else:
            import shutil

            shutil.rmtree(work, ignore_errors=True)
    write_results(out, sections, bool(args.only), machine)
    return 0


if __name__ == "__main__":
    sys.exit(main())
