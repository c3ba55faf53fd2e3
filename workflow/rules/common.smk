import json
import shlex
import sys
from pathlib import Path

from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

# This file's project, also when another workflow imports this one as a module (then
# workflow.basedir is the importing workflow's folder).
PROJECT = Path(workflow.current_basedir).parents[1]
sys.path.insert(0, str(PROJECT))

from scripts.grid import plan  # noqa: E402  (the project package, TensorFlow-free)
from scripts.models import SCRATCH_CNN  # noqa: E402
from scripts.weights import file_name, load_registry  # noqa: E402


def coerce_scalars(value):
    """`--config` values arrive as strings (`seeds=[1]` gives ['1']); restore numbers
    and booleans so that overrides validate like the same values in a YAML file."""
    if isinstance(value, dict):
        return {key: coerce_scalars(item) for key, item in value.items()}
    if isinstance(value, list):
        return [coerce_scalars(item) for item in value]
    if isinstance(value, str):
        for parse in (int, float):
            try:
                return parse(value)
            except ValueError:
                pass
        if value.lower() in ("true", "false"):
            return value.lower() == "true"
    return value


config.update(coerce_scalars(config))
validate(config, "../schemas/config.schema.yaml")

# Every step runs `python -m scripts <step>` from the project package.
shell.prefix(f"set -euo pipefail; export PYTHONPATH={shlex.quote(str(PROJECT))}; ")
RUN_DIR = "results/{dataset}/runs/{model}/{strategy}/seed{seed}"
TRAINING = config["training"]


def project_file(path):
    """A relative path from the working directory, else from the project (where the
    shipped defaults such as config/weights-registry.yaml live)."""
    path = Path(path)
    if path.is_absolute() or path.exists():
        return path
    return PROJECT / path


if not project_file(config["weights_registry"]).is_file():
    raise WorkflowError(
        f"weights_registry: {config['weights_registry']} does not exist"
    )
WEIGHTS_REGISTRY = load_registry(project_file(config["weights_registry"]))


def check_config():
    """What the schema cannot express, checked before any job starts."""
    problems = []
    for name, dataset in config["datasets"].items():
        if not Path(dataset["path"]).is_dir() and "kaggle" not in dataset:
            problems.append(
                f"datasets.{name}.path: folder {dataset['path']} does not exist"
            )
        if not Path(dataset["manifest"]).is_file() and "kaggle" not in dataset:
            problems.append(
                f"datasets.{name}.manifest: {dataset['manifest']} does not exist; create it with "
                f"`python -m scripts manifest {dataset['path']} -o {dataset['manifest']}`"
            )
    if {"partial", "full"} & set(config["strategies"]):
        if TRAINING["warmup_epochs"] >= TRAINING["epochs"]:
            problems.append(
                f"training.warmup_epochs ({TRAINING['warmup_epochs']}) must be smaller than "
                f"training.epochs ({TRAINING['epochs']}) for the partial and full strategies"
            )
    for model in config["models"]:
        spec = weights_spec(model, "frozen")
        if spec["source"] == "file" and not Path(spec["path"]).is_file():
            problems.append(f"weights.{model}: file {spec['path']} does not exist")
    if problems:
        raise WorkflowError("invalid configuration:\n  " + "\n  ".join(problems))


def weights_spec(model, strategy):
    """How the backbone of one run is initialised: source, local file and hashes."""
    if model == SCRATCH_CNN or strategy == "scratch":
        return {"source": "none"}
    setting = config["weights"]
    if isinstance(setting, dict):
        setting = setting.get(model, setting.get("default", "imagenet"))
    if isinstance(setting, dict):
        return {"source": "file", **setting}
    if setting == "none":
        return {"source": "none"}
    if setting == "imagenet":
        entry = WEIGHTS_REGISTRY[model]
        path = Path(config["weights_cache"]) / file_name(entry["url"])
        return {"source": "imagenet", "path": str(path), "md5": entry["md5"]}
    return {"source": "file", "path": setting}


RUNS, SKIPPED = plan(
    config["datasets"], config["models"], config["strategies"], config["seeds"]
)
check_config()
for skip in SKIPPED:
    logger.info(f"skipped {skip['model']} x {skip['strategy']}: {skip['reason']}")


def run_outputs(name):
    """One output file of every planned run. With ``allow_missing_runs`` only the files
    that exist: after ``snakemake --keep-going`` left failed runs, the report covers the
    finished ones and lists the others as missing."""
    paths = [f"{RUN_DIR.format(**run)}/{name}" for run in RUNS]
    if config["allow_missing_runs"]:
        paths = [path for path in paths if Path(path).exists()]
    return paths


def kaggle_marker(wildcards):
    """A downloadable dataset is verified only after its download rule ran."""
    if "kaggle" in config["datasets"][wildcards.dataset]:
        return [f"resources/downloads/{wildcards.dataset}.json"]
    return []


def dataset_manifest(wildcards):
    return config["datasets"][wildcards.dataset]["manifest"]


def manifest_input(wildcards):
    """The manifest, unless a Kaggle download will write it (no shipped manifest)."""
    manifest = dataset_manifest(wildcards)
    if kaggle_marker(wildcards) and not Path(manifest).is_file():
        return []
    return [manifest]


def dataset_root(wildcards):
    return config["datasets"][wildcards.dataset]["path"]


def dataset_listing(wildcards):
    """Names and sizes of the dataset's files: adding, removing or resizing any of them
    re-runs verification (content changes are caught by the manifest check itself)."""
    root = Path(dataset_root(wildcards))
    return sorted(
        (str(path.relative_to(root)), path.stat().st_size)
        for path in root.glob("*/*/*")
        if path.is_file()
    )


def images_cache(wildcards):
    size = TRAINING["image_size"]
    return f"results/{wildcards.dataset}/data/images_{size}px.npy"


def run_settings(wildcards):
    """The training settings of one run as JSON (a change re-runs the job)."""
    settings = dict(TRAINING)
    partial = settings["partial_layers"]
    if isinstance(partial, dict):
        settings["partial_layers"] = partial.get(wildcards.model, partial["default"])
    return json.dumps(settings, sort_keys=True)


def run_weights(wildcards):
    return json.dumps(weights_spec(wildcards.model, wildcards.strategy), sort_keys=True)


def weights_input(wildcards):
    spec = weights_spec(wildcards.model, wildcards.strategy)
    return [spec["path"]] if "path" in spec else []


def registry_entry(wildcards):
    """The weights registry entry whose URL ends in the requested file name."""
    for entry in WEIGHTS_REGISTRY.values():
        if file_name(entry["url"]) == wildcards.file_name:
            return entry
    raise WorkflowError(f"{wildcards.file_name} is not in {config['weights_registry']}")


def run_dir(wildcards, output):
    return str(Path(output[0]).parent)
