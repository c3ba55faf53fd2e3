"""The TensorFlow runtime of a train job (device, threads, GPU memory, precision,
determinism) and its provenance: where and with what the job ran, and on which GPU,
driver, CUDA and cuDNN."""

from __future__ import annotations

import contextlib
import os
import platform
import re
import socket
import subprocess
from collections.abc import Mapping
from importlib import metadata
from pathlib import Path

from scripts.common import tracing

PACKAGES = ("tensorflow", "keras", "numpy", "scikit-learn", "scipy", "pandas", "h5py",
            "opencv-python-headless", "pillow")
# How Slurm (its --gpus/--gres grant, which the rule's gpu resource becomes) or the
# environment tells a job which GPUs are its own.
GPU_GRANT_VARIABLES = ("SLURM_GPUS_ON_NODE", "SLURM_JOB_GPUS", "SLURM_STEP_GPUS", "CUDA_VISIBLE_DEVICES")


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


# The share of the GPU's memory this process may take (scripts/stages.py sets it to
# 1 / runs_at_once in each process of runs trained side by side); unset: the whole card,
# grown as needed.
GPU_MEMORY_SHARE = "CXR_GPU_MEMORY_SHARE"


def gpu_memory_limit_mb(share: float, total_mb: int | None) -> int | None:
    """The memory (MiB) TensorFlow may allocate on the GPU for a process with ``share``
    of a card of ``total_mb``: 95% of its share (the CUDA context and cuDNN's workspace
    live outside TensorFlow's allocator); None for a whole card or an unknown size."""
    if share >= 1 or not total_mb:
        return None
    return int(total_mb * share * 0.95)


def gpu_total_memory_mb(environ: Mapping[str, str]) -> int | None:
    """The memory of the job's first GPU (``nvidia-smi``; the device CUDA_VISIBLE_DEVICES
    names first, an index or UUID); None where nvidia-smi cannot tell."""
    first = environ.get("CUDA_VISIBLE_DEVICES", "0").split(",")[0].strip() or "0"
    with contextlib.suppress(OSError, subprocess.SubprocessError, ValueError):
        printed = subprocess.run(["nvidia-smi", "-i", first, "--query-gpu=memory.total",
                                  "--format=csv,noheader,nounits"], capture_output=True, text=True, timeout=30,
                                 check=True).stdout.split()
        return int(printed[0]) if printed else None
    return None


class DeviceError(Exception):
    """The job cannot train on the device it was given or asked for; the message names
    the likely cause and the fix."""


def granted_gpus(environ: Mapping[str, str]) -> dict[str, str]:
    """The variables of ``environ`` that grant this job at least one GPU: a count above
    zero (``SLURM_GPUS_ON_NODE``) or a device list whose first entry is an index or a
    GPU/MIG UUID (``""``, ``-1`` and ``NoDevFiles`` grant none)."""
    granted = {}
    for name in GPU_GRANT_VARIABLES:
        value = environ.get(name, "").strip()
        if name == "SLURM_GPUS_ON_NODE":
            if value.isdigit() and int(value) > 0:
                granted[name] = value
            continue
        first = value.split(",")[0].strip()
        if first.isdigit() or first.startswith(("GPU-", "MIG-")):
            granted[name] = value
    return granted


def choose_device(setting: str, environ: Mapping[str, str], visible_gpus: list[str], cuda_build: bool,
                  missing_cuda_packages: list[str]) -> dict:
    """Where a train job trains, from ``training.device`` (``auto``, ``gpu`` or ``cpu``),
    the job's environment, the GPUs TensorFlow sees, whether it is a CUDA build, and
    which of its ``and-cuda`` packages (the CUDA libraries) are not installed.

    ``cpu`` trains on the CPU on purpose; otherwise a visible GPU is used, and a job that
    was granted a GPU (``auto``) or asked for one (``gpu``) but sees none raises
    ``DeviceError`` before any training, instead of spending GPU hours on the CPU.
    Returns ``{"setting", "used", "reason", "granted"}`` for train.json.
    """
    granted = granted_gpus(environ)
    decision = {"setting": setting, "granted": granted}
    if setting == "cpu":
        return {**decision, "used": "cpu", "reason": "training.device is cpu: GPUs hidden"}
    if visible_gpus:
        return {**decision, "used": "gpu", "reason": f"TensorFlow sees {', '.join(visible_gpus)}"}
    if setting == "gpu" or granted:
        raise DeviceError(missing_gpu_message(setting, granted, cuda_build, missing_cuda_packages))
    return {**decision, "used": "cpu", "reason": "no GPU granted or visible"}


def missing_gpu_message(setting: str, granted: dict[str, str], cuda_build: bool,
                        missing_cuda_packages: list[str]) -> str:
    """Why a job that should train on a GPU sees none, and what fixes it."""
    if granted:
        given = ", ".join(f"{name}={value}" for name, value in granted.items())
        problem = f"this job was granted a GPU ({given}) but TensorFlow sees none"
    else:
        problem = (f"training.device is {setting} but TensorFlow sees no GPU, and none was granted "
                   f"(none of {', '.join(GPU_GRANT_VARIABLES)} names one)")
    install = "install the GPU build with `make install GPU=1` (tensorflow[and-cuda], requirements-gpu.txt)"
    if not cuda_build:
        cause = f"this TensorFlow is a CPU-only build: {install}"
    elif missing_cuda_packages:
        more = f" and {len(missing_cuda_packages) - 1} more" if len(missing_cuda_packages) > 1 else ""
        cause = (f"this TensorFlow was installed without its CUDA libraries ({missing_cuda_packages[0]}{more} "
                 f"missing): {install}, or load the site's CUDA 12 and cuDNN 9 (`module load cuda`)")
    else:
        cause = ("TensorFlow and its CUDA libraries are installed, so the node is the likely cause: a driver "
                 "too old for CUDA 12, or none (`nvidia-smi` shows the CUDA version the driver supports), "
                 "or a site that needs `module load cuda`")
    return (f"{problem}; {cause}. The job stops rather than train on the CPU; "
            "to train on the CPU on purpose, set training.device: cpu.")


def missing_cuda_packages() -> list[str]:
    """The packages of ``tensorflow[and-cuda]`` (TensorFlow's CUDA libraries) that are not installed."""
    missing = []
    for requirement in metadata.requires("tensorflow") or []:
        name, _, marker = requirement.partition(";")
        if 'extra == "and-cuda"' not in marker:
            continue
        name = re.match(r"[A-Za-z0-9._-]+", name)[0]
        try:
            metadata.version(name)
        except metadata.PackageNotFoundError:
            missing.append(name)
    return missing


@tracing.traced("configure tensorflow")
def configure_tensorflow(settings: dict, threads: int) -> dict:
    """Device, threads, GPU memory growth, precision and determinism; returns what was
    applied. Raises ``DeviceError`` (see ``choose_device``) before anything trains."""
    import keras
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    device = choose_device(settings["device"], os.environ, [gpu.name for gpu in gpus],
                           bool(tf.sysconfig.get_build_info().get("is_cuda_build")), missing_cuda_packages())
    if device["used"] == "cpu" and gpus:
        with contextlib.suppress(RuntimeError):  # hidden already by an earlier run of this process (a pack)
            tf.config.set_visible_devices([], "GPU")
        gpus = []
    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
    except RuntimeError:  # TensorFlow already ran in this process (a notebook, a test): keep its pools
        threads = tf.config.threading.get_intra_op_parallelism_threads() or len(os.sched_getaffinity(0))
    share = float(os.environ.get(GPU_MEMORY_SHARE, "1"))
    limit = gpu_memory_limit_mb(share, gpu_total_memory_mb(os.environ)) if gpus else None
    for gpu in gpus:
        if limit:  # runs side by side: each process stays within its share of the card
            with contextlib.suppress(RuntimeError):  # set already by an earlier run of this process
                tf.config.set_logical_device_configuration(gpu, [tf.config.LogicalDeviceConfiguration(limit)])
        else:  # without growth TF grabs the whole card, which breaks shared or MIG GPUs
            tf.config.experimental.set_memory_growth(gpu, True)
    if gpus:
        check_first_operation("/GPU:0")
    policy = {"none": "float32", "float16": "mixed_float16",
              "bfloat16": "mixed_bfloat16"}[settings["mixed_precision"]]
    keras.mixed_precision.set_global_policy(policy)
    if settings["deterministic"]:
        tf.config.experimental.enable_op_determinism()
    on_gpu = device["used"] == "gpu"
    return {
        "device": device,
        "gpu": gpu_stack(tf.config.experimental.get_device_details(gpus[0]).get("device_name") if on_gpu else None,
                         nvidia_driver() if on_gpu else None, tf.sysconfig.get_build_info() if on_gpu else {},
                         nvidia_packages() if on_gpu else None),
        "devices": [gpu.name for gpu in gpus] or ["CPU"],
        "gpu_memory_limit_mb": limit,
        "threads": threads,
        "precision_policy": policy,
        "xla": settings["xla"],
        "deterministic_ops": settings["deterministic"],
    }


def first_convolution(device: str) -> float:
    """A tiny convolution on ``device``: it needs cuDNN, where most broken GPU set-ups fail."""
    import tensorflow as tf

    with tf.device(device):
        return float(tf.reduce_sum(tf.nn.conv2d(tf.ones((1, 8, 8, 1)), tf.ones((3, 3, 1, 1)), 1, "SAME")))


def check_first_operation(device: str, operation=first_convolution) -> None:
    """Run one tiny operation on ``device`` before any training. A GPU that TensorFlow
    lists but cannot compute on (cuDNN from a module loaded ahead of the wheels, a PTX
    or driver mismatch, a card in exclusive-process mode held by another process) then
    stops the job once, with one line, instead of failing every seed with a traceback."""
    try:
        operation(device)
    except Exception as error:  # TensorFlow raises its OpError subclasses, or plain runtime errors
        first = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise DeviceError(
            f"TensorFlow lists this job's GPU, but its first operation on {device} failed: {first}. Likely "
            "causes: CUDA or cuDNN libraries from a `module load` ahead of TensorFlow's own wheels (run without "
            "that module, or check LD_LIBRARY_PATH), a driver too old for CUDA 12 (`nvidia-smi`), or a GPU in "
            "exclusive-process mode that another process holds. The job stops rather than train on the CPU; "
            "to train on the CPU on purpose, set training.device: cpu.") from error


def gpu_stack(model: str | None, driver: str | None, build_info: Mapping, packages: dict | None) -> dict:
    """The GPU a job trained on and the software between TensorFlow and it, for train.json
    (a GPU run's numbers can differ between cards, drivers and cuDNN versions): the card's
    ``model`` name, the NVIDIA ``driver`` version, the CUDA and cuDNN versions this
    TensorFlow was built with (``tf.sysconfig.get_build_info()``) and the installed
    ``nvidia-*`` packages (the CUDA libraries of ``tensorflow[and-cuda]``). Each None on
    the CPU or where it is absent."""
    return {"model": model, "driver": driver, "cuda": build_info.get("cuda_version"),
            "cudnn": build_info.get("cudnn_version"), "nvidia_packages": packages or None}


def nvidia_driver() -> str | None:
    """The loaded NVIDIA kernel driver's version (``/proc/driver/nvidia/version``, else
    ``nvidia-smi``); None without one."""
    with contextlib.suppress(OSError):
        found = re.search(r"Kernel Module\b.*?\s(\d+\.\d+(?:\.\d+)?)\s",
                          Path("/proc/driver/nvidia/version").read_text())
        if found:
            return found[1]
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        printed = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                                 capture_output=True, text=True, timeout=30, check=True).stdout.split()
        return printed[0] if printed else None
    return None


def nvidia_packages() -> dict[str, str]:
    """Name and version of every installed ``nvidia-*`` package (CUDA, cuDNN, cuBLAS... wheels)."""
    return dict(sorted((dist.metadata["Name"], dist.version) for dist in metadata.distributions()
                       if (dist.metadata["Name"] or "").lower().startswith("nvidia-")))


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
