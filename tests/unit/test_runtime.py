"""Where a train job trains: the device decision (``training.device``, the GPUs Slurm or
the environment granted, the GPUs TensorFlow sees, its CUDA build and libraries), and a
job granted a GPU that sees none stopping with one ``ERROR:`` line."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from conftest import PROJECT

from scripts.common.layout import RUN_FILES
from scripts.train.runtime import (
    DeviceError,
    check_first_operation,
    choose_device,
    configure_tensorflow,
    first_convolution,
    gpu_memory_limit_mb,
    gpu_stack,
    granted_gpus,
    missing_cuda_packages,
    nvidia_packages,
)

SLURM_GPU_JOB = {"SLURM_GPUS_ON_NODE": "1", "SLURM_JOB_GPUS": "0", "CUDA_VISIBLE_DEVICES": "0"}
GPU = ["/physical_device:GPU:0"]
CUDA_LIBRARIES = ["nvidia-cudnn-cu12", "nvidia-cublas-cu12"]


@pytest.mark.parametrize("environ, granted", [
    ({}, {}),
    (SLURM_GPU_JOB, SLURM_GPU_JOB),
    ({"SLURM_GPUS_ON_NODE": "0", "SLURM_JOB_GPUS": "", "SLURM_STEP_GPUS": " "}, {}),
    ({"SLURM_STEP_GPUS": "2,3"}, {"SLURM_STEP_GPUS": "2,3"}),
    ({"CUDA_VISIBLE_DEVICES": "-1"}, {}),  # hides every GPU
    ({"CUDA_VISIBLE_DEVICES": "NoDevFiles"}, {}),  # what some Slurm versions set without a GPU
    ({"CUDA_VISIBLE_DEVICES": "GPU-5f0c3b1e-aaaa"}, {"CUDA_VISIBLE_DEVICES": "GPU-5f0c3b1e-aaaa"}),
    ({"CUDA_VISIBLE_DEVICES": "MIG-1a2b"}, {"CUDA_VISIBLE_DEVICES": "MIG-1a2b"}),
    ({"SLURM_GPUS_ON_NODE": "two", "HOME": "/root"}, {}),
])
def test_granted_gpus_are_variables_that_name_a_device(environ, granted):
    assert granted_gpus(environ) == granted


def test_cpu_trains_on_the_cpu_on_purpose_even_where_a_gpu_is_granted_and_seen():
    decision = choose_device("cpu", SLURM_GPU_JOB, GPU, cuda_build=True, missing_cuda_packages=[])
    assert (decision["setting"], decision["used"]) == ("cpu", "cpu")
    assert decision["granted"] == SLURM_GPU_JOB and "cpu" in decision["reason"]


@pytest.mark.parametrize("setting", ["auto", "gpu"])
@pytest.mark.parametrize("environ", [{}, SLURM_GPU_JOB])
def test_a_visible_gpu_is_used(setting, environ):
    decision = choose_device(setting, environ, GPU, cuda_build=True, missing_cuda_packages=[])
    assert decision["used"] == "gpu" and GPU[0] in decision["reason"]


def test_auto_without_a_granted_or_visible_gpu_trains_on_the_cpu():
    decision = choose_device("auto", {"CUDA_VISIBLE_DEVICES": ""}, [], cuda_build=False,
                             missing_cuda_packages=CUDA_LIBRARIES)
    assert (decision["used"], decision["granted"]) == ("cpu", {})


@pytest.mark.parametrize("cuda_build, missing, cause, fix", [
    (False, CUDA_LIBRARIES, "CPU-only build", "make install GPU=1"),
    (True, CUDA_LIBRARIES, "nvidia-cudnn-cu12 and 1 more missing", "make install GPU=1"),
    (True, [], "driver too old for CUDA 12", "nvidia-smi"),
])
def test_auto_with_a_granted_gpu_it_cannot_see_stops_naming_cause_and_fix(cuda_build, missing, cause, fix):
    with pytest.raises(DeviceError) as error:
        choose_device("auto", {"SLURM_GPUS_ON_NODE": "1"}, [], cuda_build=cuda_build,
                      missing_cuda_packages=missing)
    message = str(error.value)
    assert "granted a GPU (SLURM_GPUS_ON_NODE=1)" in message
    assert cause in message and fix in message and "training.device: cpu" in message


def test_the_missing_cuda_libraries_are_named_with_the_module_fix():
    with pytest.raises(DeviceError, match=r"nvidia-cudnn-cu12 missing\).*module load cuda"):
        choose_device("auto", SLURM_GPU_JOB, [], cuda_build=True, missing_cuda_packages=["nvidia-cudnn-cu12"])


def test_gpu_without_a_visible_gpu_stops_even_where_none_was_granted():
    with pytest.raises(DeviceError, match="training.device is gpu but TensorFlow sees no GPU, and none was granted"):
        choose_device("gpu", {}, [], cuda_build=True, missing_cuda_packages=[])


def test_missing_cuda_packages_are_tensorflows_and_cuda_extra():
    """This venv has the plain tensorflow wheel: every ``and-cuda`` package is missing."""
    missing = missing_cuda_packages()
    assert "nvidia-cudnn-cu12" in missing and all(name.startswith("nvidia-") for name in missing)


def test_a_slurm_gpu_job_with_cpu_only_tensorflow_exits_1_with_one_error_line(tmp_path):
    """Slurm's variables of a ``--gpus=1`` job and this venv's TensorFlow (no CUDA
    libraries): the train step stops at the device check, before reading its split."""
    np.save(tmp_path / "images.npy", np.zeros((1, 32, 32, 3), np.uint8))
    (tmp_path / "split.csv").write_text("path,label,subset\n")
    settings = {"training": {"device": "auto", "checkpoint_seconds": 0, "mixed_precision": "none",
                             "deterministic": True, "xla": "auto"}, "weights": {}, "positive_class": None}
    command = [sys.executable, "-m", "scripts", "train", "--dataset", "d", "--model", "scratch_cnn",
               "--strategy", "scratch", "--weights-name", "none", "--fraction", "1", "--seed", "1",
               "--images", str(tmp_path / "images.npy"), "--split", str(tmp_path / "split.csv"),
               "--settings", json.dumps(settings), "--checkpoint", str(tmp_path / "checkpoint"),
               "--feature-cache", str(tmp_path / "cache"), "--threads", "1",
               "--outputs", json.dumps({name: str(tmp_path / name) for name in RUN_FILES})]
    done = subprocess.run(command, cwd=PROJECT, env={**os.environ, **SLURM_GPU_JOB}, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 1
    errors = [line for line in done.stderr.splitlines() if line.startswith("ERROR:")]
    assert len(errors) == 1 and "granted a GPU" in errors[0] and "make install GPU=1" in errors[0]
    assert "Traceback" not in done.stderr and not (tmp_path / "checkpoint").exists()


def test_a_cpu_job_records_its_gpu_fields_as_none():
    """train.json's ``gpu``: the card, driver, CUDA, cuDNN and nvidia-* packages, each
    None where the job trains on the CPU (this venv: CPU-only TensorFlow, no nvidia-* wheel)."""
    applied = configure_tensorflow({"device": "cpu", "mixed_precision": "none", "deterministic": False,
                                    "xla": "auto"}, threads=1)
    assert applied["gpu"] == {"model": None, "driver": None, "cuda": None, "cudnn": None, "nvidia_packages": None}
    assert nvidia_packages() == {}


def test_a_gpu_job_records_the_card_driver_build_and_cuda_packages():
    build = {"cuda_version": "12.5.1", "cudnn_version": "9", "is_cuda_build": True}
    assert gpu_stack("NVIDIA H100 80GB HBM3", "550.54.14", build, {"nvidia-cudnn-cu12": "9.3.0.75"}) == {
        "model": "NVIDIA H100 80GB HBM3", "driver": "550.54.14", "cuda": "12.5.1", "cudnn": "9",
        "nvidia_packages": {"nvidia-cudnn-cu12": "9.3.0.75"}}


def test_a_device_whose_first_operation_fails_stops_the_job_with_one_line():
    """TensorFlow lists the GPU but cannot compute on it (here an operation that fails as
    a cuDNN mismatch does): one DeviceError naming the device, the cause and the fix."""
    import tensorflow as tf

    assert first_convolution("/CPU:0") == 36 * 9 + 24 * 6 + 4 * 4  # 3x3 ones over 8x8 ones, zero-padded
    check_first_operation("/CPU:0")

    def broken(device):
        raise tf.errors.InternalError(None, None, "cuDNN launch failure : input shape([1,1,8,8])\nmore detail")

    with pytest.raises(DeviceError) as stopped:
        check_first_operation("/GPU:0", broken)
    message = str(stopped.value)
    assert message.startswith("TensorFlow lists this job's GPU, but its first operation on /GPU:0 failed: "
                              "cuDNN launch failure : input shape([1,1,8,8]).")
    assert "\n" not in message and "training.device: cpu" in message


def test_runs_side_by_side_each_get_their_share_of_the_gpu_memory():
    assert gpu_memory_limit_mb(0.5, 81559) == int(81559 * 0.5 * 0.95)
    assert gpu_memory_limit_mb(1.0, 81559) is None  # one process: grows on the whole card
    assert gpu_memory_limit_mb(0.25, None) is None  # nvidia-smi did not tell: growth as before
