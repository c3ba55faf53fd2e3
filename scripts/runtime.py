"""The TensorFlow runtime of a train job (threads, GPU memory, precision, determinism)
and its provenance: where and with what the job ran."""

from __future__ import annotations

import os
import platform
import socket
from importlib import metadata

from scripts import tracing

PACKAGES = ("tensorflow", "keras", "numpy", "scikit-learn", "scipy", "pandas", "h5py",
            "opencv-python-headless", "pillow")


def allocated_threads(granted: int | None = None) -> int:
    """CPU threads for TensorFlow: up to twice the threads Snakemake granted, never more
    than the job's allocation (its CPU affinity mask, what a Slurm or cgroup allocation
    leaves visible, and ``SLURM_CPUS_PER_TASK``).

    Why twice: on a crowded grid Snakemake grants one core per job, and a job then idles
    its core whenever the other job is between epochs (tracing, validation, start-up) and
    trains alone at the end of the grid; a second thread lets it use the idle core
    meanwhile (``make benchmark``, section 5, measures the effect). More than twice would
    oversubscribe a big machine's cores many times over.
    """
    limits = [len(os.sched_getaffinity(0))]
    if os.environ.get("SLURM_CPUS_PER_TASK", "").isdigit():
        limits.append(int(os.environ["SLURM_CPUS_PER_TASK"]))
    if granted:
        limits.append(2 * granted)
    return max(1, min(limits))


@tracing.traced("configure tensorflow")
def configure_tensorflow(settings: dict, threads: int) -> dict:
    """Threads, GPU memory growth, precision and determinism; returns what was applied."""
    import keras
    import tensorflow as tf

    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
    except RuntimeError:  # TensorFlow already ran in this process (a notebook, a test): keep its pools
        threads = tf.config.threading.get_intra_op_parallelism_threads() or len(os.sched_getaffinity(0))
    gpus = tf.config.list_physical_devices("GPU")
    for gpu in gpus:
        # Without growth TF grabs the whole card, which breaks shared or MIG GPUs.
        tf.config.experimental.set_memory_growth(gpu, True)
    policy = {"none": "float32", "float16": "mixed_float16",
              "bfloat16": "mixed_bfloat16"}[settings["mixed_precision"]]
    keras.mixed_precision.set_global_policy(policy)
    if settings["deterministic"]:
        tf.config.experimental.enable_op_determinism()
    return {
        "devices": [gpu.name for gpu in gpus] or ["CPU"],
        "threads": threads,
        "precision_policy": policy,
        "xla": settings["xla"],
        "deterministic_ops": settings["deterministic"],
    }


def environment() -> dict:
    """Where and with what this job ran (the report's software versions come from here)."""
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return {
        "host": socket.gethostname(),
        "slurm_job_id": os.environ.get("SLURM_JOB_ID"),
        "slurm_restart_count": os.environ.get("SLURM_RESTART_COUNT"),
        "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
        "python": platform.python_version(),
        "packages": versions,
    }
