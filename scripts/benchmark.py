"""Benchmarks on the bundled demo data: ``python -m scripts.benchmark`` (``make benchmark``).

Prints one table and writes it to ``results/benchmarks/benchmark.{csv,md}``. Every
comparison is measured side by side in this one run; times are medians of >= 3
repeats (timed epochs, or whole jobs) unless the row says otherwise.

1. our tf.data pipeline + ``fit`` vs ``fit`` on the same images as in-memory tensors;
2. our pipeline vs ``ImageDataGenerator.flow_from_directory`` (the Keras-notebook way);
3. the frozen strategy trained end to end vs on cached backbone features, 5 seeds;
4. ``snakemake -n`` on a grid of >= 1,000 jobs, and at 2x and 4x that grid;
5. the fixed cost of a separate evaluate/Grad-CAM job, which the train job avoids.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from scripts import fsutil, stages

PROJECT = Path(__file__).resolve().parents[1]
DEMO = PROJECT / "resources" / "demo" / "covid19-cxr-3class"
DEMO_MANIFEST = PROJECT / "config" / "manifests" / "demo.sha256"
AUGMENT = {"enabled": True, "flip": True, "rotation": 0.05, "shift": 0.1, "zoom": 0.1}
ROWS: list[dict] = []


def record(section: str, what: str, value: float, unit: str, note: str = "") -> None:
    row = {"section": section, "measurement": what, "value": round(value, 3), "unit": unit, "note": note,
           "measured": time.strftime("%Y-%m-%d %H:%M")}
    ROWS.append(row)
    print(f"[{section}] {what}: {row['value']} {unit} {note}", flush=True)


def timed_epochs(fit_one_epoch, repeats: int) -> float:
    """Median seconds of ``repeats`` epochs after one untimed warm-up (graph tracing)."""
    fit_one_epoch()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fit_one_epoch()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def prepare_demo(work: Path, image_size: int) -> dict:
    """Verify, decode and split the demo data the way the workflow does."""
    data = work / "data"
    stages.verify("demo", str(DEMO), str(DEMO_MANIFEST), "warn", str(data / "index.csv"),
                  str(data / "verify.json"))
    started = time.perf_counter()
    # the demo has no colour overlays (tests/test_images.py): the policy does not change the timing
    stages.prepare(str(DEMO), str(data / "index.csv"), image_size, str(data / "images.npy"),
                   str(data / "conversions.json"), colour_policy="warn", colour_tolerance=32,
                   colour_min_share=0.0005)
    decode_seconds = time.perf_counter() - started
    for seed in range(1, 6):
        stages.split(str(data / "index.csv"), seed, 0.15, "warn", str(data / f"seed{seed}.csv"))
    return {"images": data / "images.npy", "decode_seconds": decode_seconds,
            "split": lambda seed: data / f"seed{seed}.csv"}


def model_for(name: str, image_size: int, n_classes: int):
    """A compiled model: ``scratch_cnn``, or ResNet50 with its backbone frozen."""
    import keras

    from scripts.models import build_model, set_trainable

    keras.utils.set_random_seed(1)
    model, backbone = build_model(name, image_size, n_classes, None)
    set_trainable(model, backbone, "all" if name == "scratch_cnn" else "head")
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    return model


def bench_input_pipelines(demo: dict, image_size: int, batch_size: int, repeats: int) -> None:
    from scripts.pipeline import augmentation, train_dataset

    split = pd.read_csv(demo["split"](1))
    cached = np.load(demo["images"])
    x, y, _ = stages._subset(cached, split, "train", stages.classes_of(split))
    augment = augmentation(AUGMENT)
    for name in ("scratch_cnn", "resnet50"):
        bench_one_model(name, x, y, augment, image_size, batch_size, repeats)

    # The input side alone: one epoch of augmented batches, no model.
    ours = timed_epochs(lambda: list(train_dataset(x, y, batch_size, 0, augment)), repeats)
    stream, steps = notebook_flow(image_size, batch_size)
    legacy = timed_epochs(lambda: [next(stream) for _ in range(steps)], repeats)
    record("2 vs ImageDataGenerator", "input only (one epoch of augmented batches, no model): ours",
           ours, "s/epoch")
    record("2 vs ImageDataGenerator", "input only: flow_from_directory", legacy, "s/epoch")
    record("2 vs ImageDataGenerator", "input only: speed-up of our pipeline", legacy / ours, "x",
           "what a GPU, where the model step is cheap, would see")
    record("2 vs ImageDataGenerator", f"our one-off decode of all {len(cached)} images at {image_size} px",
           demo["decode_seconds"], "s", "prepare_images job, once per dataset x size")


def notebook_flow(image_size: int, batch_size: int):
    """The Keras-notebook input: ``ImageDataGenerator.flow_from_directory`` with rescale
    and the same augmentation; an endless ``(images, int labels)`` stream and its steps."""
    import tf_keras

    generator = tf_keras.preprocessing.image.ImageDataGenerator(
        rescale=1 / 255, horizontal_flip=True, rotation_range=AUGMENT["rotation"] * 360,
        width_shift_range=AUGMENT["shift"], height_shift_range=AUGMENT["shift"], zoom_range=AUGMENT["zoom"])
    flow = generator.flow_from_directory(str(DEMO / "train"), target_size=(image_size, image_size),
                                         batch_size=batch_size, class_mode="sparse", seed=1)
    stream = ((images, labels.astype("int32")) for images, labels in flow)
    return stream, len(flow)


def bench_one_model(name: str, x: np.ndarray, y: np.ndarray, augment, image_size: int, batch_size: int,
                    repeats: int) -> None:
    import keras
    import tensorflow as tf

    from scripts.pipeline import train_dataset

    n_classes = int(y.max()) + 1
    label = f"{name} ({'all trainable' if name == 'scratch_cnn' else 'frozen backbone'}), {image_size} px"
    model = model_for(name, image_size, n_classes)
    epoch = iter(range(1000))
    ours = timed_epochs(lambda: model.fit(
        train_dataset(x, y, batch_size, next(epoch), augment), verbose=0), repeats)
    record("1 input pipeline", f"{label}: our tf.data pipeline", ours, "s/epoch")

    # The compute-bound limit: the same images as float tensors in memory, augmentation
    # as Keras layers inside the model (keras.io style), no input pipeline.
    layers = [keras.layers.RandomFlip("horizontal"), keras.layers.RandomRotation(AUGMENT["rotation"]),
              keras.layers.RandomTranslation(AUGMENT["shift"], AUGMENT["shift"]),
              keras.layers.RandomZoom(AUGMENT["zoom"])]
    in_memory = keras.Sequential([keras.Input((image_size, image_size, 3)), *layers,
                                  model_for(name, image_size, n_classes)])
    in_memory.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy",
                      metrics=["accuracy"])
    x_tensor, y_tensor = tf.constant(x, tf.float32), tf.constant(y)
    limit = timed_epochs(lambda: in_memory.fit(x_tensor, y_tensor, batch_size=batch_size, shuffle=True,
                                               verbose=0), repeats)
    record("1 input pipeline", f"{label}: in-memory tensors", limit, "s/epoch")
    record("1 input pipeline", f"{label}: throughput ratio ours / in-memory", limit / ours, "x",
           "target >= 0.9")

    stream, steps = notebook_flow(image_size, batch_size)
    notebook = model_for(name, image_size, n_classes)
    legacy = timed_epochs(lambda: notebook.fit(stream, steps_per_epoch=steps, verbose=0), repeats)
    record("2 vs ImageDataGenerator", f"{label}: flow_from_directory", legacy, "s/epoch",
           "decodes every JPEG every epoch")
    record("2 vs ImageDataGenerator", f"{label}: speed-up of our pipeline", legacy / ours, "x",
           "target >= 3")


def run_train_job(demo: dict, run_dir: Path, seed: int, settings: dict, weights: dict) -> dict:
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "scripts", "train", "--images", str(demo["images"]), "--split",
         str(demo["split"](seed)), "--run-dir", str(run_dir), "--settings", json.dumps(settings),
         "--weights", json.dumps(weights), "--threads", "1"],
        capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(PROJECT)}, check=False)
    if done.returncode:
        raise RuntimeError(f"train job {run_dir} failed:\n{done.stderr[-3000:]}")
    info = json.loads((run_dir / "train.json").read_text())
    return {"wall": time.perf_counter() - started, "train": info["train_seconds"],
            "reused": info.get("feature_cache_reused")}


def bench_frozen_cache(demo: dict, work: Path, image_size: int, batch_size: int, epochs: int) -> None:
    import keras

    # A stand-in for the ImageNet file (nothing can be downloaded here): same
    # architecture, same size, random values. Frozen-path cost does not depend on them.
    backbone_file = work / "resnet50_notop_random.weights.h5"
    keras.applications.ResNet50(include_top=False, weights=None).save_weights(backbone_file)
    weights = {"source": "benchmark stand-in", "path": str(backbone_file),
               "sha256": fsutil.file_digest(backbone_file)}
    settings = {"image_size": image_size, "batch_size": batch_size, "epochs": epochs, "warmup_epochs": 0,
                "learning_rate": 1e-3, "finetune_learning_rate": 1e-4, "partial_layers": 0,
                "early_stopping_patience": 0, "augmentation": {"enabled": False}}
    seeds = range(1, 6)
    for cached in (False, True):
        path = "cached features" if cached else "end to end"
        results = work / ("cached" if cached else "end-to-end")
        jobs = [run_train_job(demo, results / f"demo/runs/resnet50/frozen/seed{s}", s,
                              {**settings, "frozen_feature_cache": cached}, weights) for s in seeds]
        record("3 frozen strategy", f"ResNet50 frozen, {epochs} epochs x 5 seeds, {path}: training time",
               sum(j["train"] for j in jobs), "s", "sum over seeds")
        record("3 frozen strategy", f"... {path}: whole jobs (start, build, train, test + Grad-CAM)",
               sum(j["wall"] for j in jobs), "s", "sum over seeds")
        if cached:
            record("3 frozen strategy", "... seeds that reused the shared feature cache",
                   sum(bool(j["reused"]) for j in jobs), "of 5")
        else:
            end_to_end = jobs
    train_ratio = sum(j["train"] for j in end_to_end) / sum(j["train"] for j in jobs)
    wall_ratio = sum(j["wall"] for j in end_to_end) / sum(j["wall"] for j in jobs)
    record("3 frozen strategy", "training time, end to end / cached", train_ratio, "x", "target >= 10")
    record("3 frozen strategy", "whole jobs, end to end / cached", wall_ratio, "x")


def grid_config(work: Path, datasets: int, seeds: int) -> Path:
    config = yaml.safe_load((PROJECT / "config" / "config.yaml").read_text())
    demo = config["datasets"]["demo"]
    config["datasets"] = {f"site{i}": {"path": str(DEMO), "manifest": str(PROJECT / demo["manifest"])}
                          for i in range(datasets)}
    config["models"] = ["scratch_cnn", "vgg16", "resnet50", "efficientnetb0", "densenet121"]
    config["strategies"] = ["scratch", "frozen", "partial", "full"]
    config["seeds"] = list(range(1, seeds + 1))
    path = work / f"grid_{datasets}x{seeds}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def bench_dry_run(work: Path, repeats: int) -> None:
    directory = work / "dry-run"
    directory.mkdir()
    for scale in (1, 2, 4):
        config = grid_config(work, 5, 12 * scale)
        command = [sys.executable, "-m", "snakemake", "-n", "--quiet", "rules", "-s",
                   str(PROJECT / "workflow" / "Snakefile"), "--directory", str(directory),
                   "--configfile", str(config), "--cores", "1"]
        times, output = [], ""
        for _ in range(repeats):
            started = time.perf_counter()
            done = subprocess.run(command, capture_output=True, text=True, check=True)
            times.append(time.perf_counter() - started)
            output = done.stdout + done.stderr
        jobs = next(int(line.split()[-1]) for line in output.splitlines() if line.startswith("total"))
        record("4 snakemake -n", f"5 datasets x 5 models x 4 strategies x {12 * scale} seeds: {jobs} jobs",
               statistics.median(times), "s", "target < 5 s" if scale == 1 else f"{scale}x the grid")


def bench_job_overhead(demo: dict, work: Path, image_size: int, repeats: int) -> None:
    """What a separate evaluate/Grad-CAM job per run would pay before doing any work."""
    probe = (
        "import time; t0 = time.perf_counter(); import tensorflow, keras; t1 = time.perf_counter();"
        "from scripts.models import build_model, last_conv_layer;"
        "from scripts.inference import InferencePass;"
        "import numpy as np; m, _ = build_model('resnet50', {size}, 3, None);"
        "m.load_weights('{weights}'); t2 = time.perf_counter();"
        "x = np.load('{images}', mmap_mode='r')[:64];"
        "inf = InferencePass(m, last_conv_layer('resnet50'), 32);"
        "inf.run(x); t3 = time.perf_counter(); inf.run(x); t4 = time.perf_counter();"
        "print(t1 - t0, t2 - t1, t3 - t2 - (t4 - t3), t4 - t3)"
    )
    import keras

    from scripts.models import build_model

    model, _ = build_model("resnet50", image_size, 3, None)
    model_file = work / "resnet50_model.weights.h5"
    keras.Model(model.inputs, model.outputs).save_weights(model_file)
    code = probe.format(size=image_size, weights=model_file, images=demo["images"])
    steps = ["python start, numpy and project imports", "import tensorflow + keras",
             "build ResNet50 + load weights", "trace the Grad-CAM/inference function",
             "64 test images, steady state"]
    samples = {step: [] for step in steps}
    for _ in range(repeats):
        started = time.perf_counter()
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                              env={**os.environ, "PYTHONPATH": str(PROJECT)})
        total = time.perf_counter() - started
        parts = [float(v) for v in done.stdout.split()[-4:]]
        for step, value in zip(steps, [total - sum(parts), *parts], strict=True):
            samples[step].append(value)
    for step, values in samples.items():
        record("5 per-job overhead", step, statistics.median(values), "s")
    fixed = sum(statistics.median(samples[step]) for step in steps[:-1])
    record("5 per-job overhead", "fixed cost a separate evaluate job would add per run", fixed, "s",
           "saved: the train job evaluates in-process (plus one scheduler round-trip on Slurm)")


def markdown_table(table: pd.DataFrame) -> str:
    lines = ["| " + " | ".join(table.columns) + " |", "|" + "---|" * len(table.columns)]
    lines += ["| " + " | ".join(str(v) for v in row) + " |" for row in table.itertuples(index=False)]
    return "\n".join(lines) + "\n"


def describe_machine() -> str:
    import tensorflow as tf

    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    gpus = [d.name for d in tf.config.list_physical_devices("GPU")]
    return (f"{cpu}, {os.cpu_count()} CPUs, {'GPU: ' + ', '.join(gpus) if gpus else 'no GPU'}; "
            f"Python {platform.python_version()}, TensorFlow {tf.__version__}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m scripts.benchmark", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", default="results/benchmarks", help="folder for benchmark.csv/.md")
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--frozen-epochs", type=int, default=10)
    parser.add_argument("--only", nargs="*", choices=["1", "3", "4", "5"],
                        help="sections to run (1 runs 1 and 2), keeping the others' previous rows; "
                        "default all")
    args = parser.parse_args(argv)
    sections = set(args.only or ["1", "3", "4", "5"])
    machine = describe_machine()
    print(f"machine: {machine}", flush=True)
    with tempfile.TemporaryDirectory(prefix="cxr-benchmark-") as tmp:
        work = Path(tmp)
        demo = prepare_demo(work, args.image_size)
        if "1" in sections:
            bench_input_pipelines(demo, args.image_size, args.batch_size, args.repeats)
        if "3" in sections:
            bench_frozen_cache(demo, work, args.image_size, args.batch_size, args.frozen_epochs)
        if "4" in sections:
            bench_dry_run(work, args.repeats)
        if "5" in sections:
            bench_job_overhead(demo, work, args.image_size, args.repeats)
    table = pd.DataFrame(ROWS)
    out = Path(args.output)
    if args.only and (out / "benchmark.csv").exists():  # keep the sections not rerun
        previous = pd.read_csv(out / "benchmark.csv", keep_default_na=False)
        rerun = sections | ({"2"} if "1" in sections else set())
        kept = previous[~previous["section"].str.split().str[0].isin(rerun)]
        table = pd.concat([table, kept]).sort_values("section", kind="stable").fillna("earlier run")
    fsutil.write_csv(out / "benchmark.csv", table)
    fsutil.write_text(out / "benchmark.md", f"Machine: {machine}\n\n"
                      "Measured with `python -m scripts.benchmark` (the `measured` column says when).\n\n"
                      + markdown_table(table))
    print(f"\nwrote {out / 'benchmark.csv'} and {out / 'benchmark.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
