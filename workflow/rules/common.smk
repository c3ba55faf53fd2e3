import hashlib
import json
import re
import shlex
import sys
from pathlib import Path

from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

# The project root, from this file's own location (also right when another workflow
# imports this one as a module, where workflow.basedir is the importer's).
PROJECT = Path(str(workflow.current_basedir)).parents[1]
sys.path.insert(0, str(PROJECT))

from scripts import grid  # noqa: E402  (the project package, TensorFlow-free)
from scripts.layout import (  # noqa: E402
    DATASET_FILES,
    EXTERNAL_OVERLAP,
    FEATURE_CACHE,
    PLAN,
    RUN_DIR,
    RUN_FILES,
    RUN_LOG_DIR,
    SPLIT,
    TABLES,
)
from scripts.external import class_map_problems  # noqa: E402
from scripts.models import MODELS, SCRATCH_CNN  # noqa: E402
from scripts.weight_files import file_name, load_registry  # noqa: E402


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
# Fills in every default: the schema is the one place defaults live.
validate(config, "../schemas/config.schema.yaml")

# Every step runs `python -m scripts <step>` from the project package.
shell.prefix(f"set -euo pipefail; export PYTHONPATH={shlex.quote(str(PROJECT))}; ")

# Every path the workflow writes: scripts/layout.py.
SPLIT_SETTINGS = ("val_fraction", "leakage", "val_folder", "min_val_per_class")
TRAINING = config["training"]
IMAGE_SIZE = TRAINING["image_size"]
# The datasets the grid trains on; the others (train: false) are only external test sets.
TRAINED = [name for name, dataset in config["datasets"].items() if dataset["train"]]


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
try:
    SOURCES = {s["name"]: s["spec"] for s in grid.weights_sources(config["weights"])}
except ValueError as error:
    raise WorkflowError(str(error))


def weights_spec(model, weights_name):
    """How the backbone of one run is initialised: source, local file and hashes."""
    if model == SCRATCH_CNN or weights_name == grid.RANDOM_INIT:
        return {"source": "none"}
    setting = SOURCES[weights_name]
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


def class_folders(dataset):
    """Class names as the folders under train/ (None when the data is not there yet)."""
    train = Path(dataset["path"]) / "train"
    if not train.is_dir():
        return None
    return sorted(p.name for p in train.iterdir() if p.is_dir() and any(p.iterdir()))


def per_model(setting, model):
    """A training setting given as one value or as a mapping per model with "default"."""
    return (
        setting.get(model, setting["default"]) if isinstance(setting, dict) else setting
    )


def test_classes(dataset):
    """Class names as the folders under test/ (None when the data is not there yet)."""
    test = Path(dataset["path"]) / "test"
    if not test.is_dir():
        return None
    return sorted(p.name for p in test.iterdir() if p.is_dir() and any(p.iterdir()))


def external_test_problems(name, dataset):
    """Each external test names another dataset and maps every trained class onto it."""
    problems = []
    if not dataset["train"] and dataset["external_tests"]:
        problems.append(
            f"datasets.{name}.external_tests: {name} has train: false, so no model of it is tested"
        )
    names = [test["dataset"] for test in dataset["external_tests"]]
    for position, test in enumerate(dataset["external_tests"]):
        key = f"datasets.{name}.external_tests[{position}]"
        other = test["dataset"]
        if other == name or other not in config["datasets"]:
            problems.append(
                f"{key}.dataset: {other!r} is not another dataset under datasets "
                f"({sorted(set(config['datasets']) - {name})})"
            )
            continue
        if names.count(other) > 1:
            problems.append(f"{key}.dataset: {other!r} is listed more than once")
        trained = class_folders(dataset)
        external = test_classes(config["datasets"][other])
        if trained and external:
            problems += class_map_problems(
                f"{key}.class_map", test["class_map"], trained, external
            )
    return problems


def check_config():
    """What the schema cannot express, checked before any job starts."""
    problems = []
    if not TRAINED:
        problems.append(
            "datasets: every dataset has train: false; at least one must be trained on"
        )
    left, top, right, bottom = config["evaluation"]["lung_box"]
    if not (left < right and top < bottom):
        problems.append(
            f"evaluation.lung_box: {[left, top, right, bottom]} is not [left, top, right, bottom] "
            "with left < right and top < bottom"
        )
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
        classes = class_folders(dataset)
        positive = dataset.get("positive_class")
        if classes and positive is None and len(classes) == 2:
            problems.append(
                f"datasets.{name}.positive_class: required for a two-class dataset "
                f"(one of {classes}): sensitivity is the recall of this class, specificity that of the other"
            )
        if classes and positive is not None and positive not in classes:
            problems.append(
                f"datasets.{name}.positive_class: {positive!r} is not a class of {dataset['path']} ({classes})"
            )
        problems += external_test_problems(name, dataset)
    if {"partial", "full"} & set(config["strategies"]):
        for model in set(config["models"]) - {SCRATCH_CNN}:
            epochs = per_model(TRAINING["epochs"], model)
            if TRAINING["warmup_epochs"] >= epochs:
                problems.append(
                    f"training.warmup_epochs ({TRAINING['warmup_epochs']}) must be smaller than "
                    f"training.epochs ({epochs} for {model}) for the partial and full strategies"
                )
    for model in config["models"]:
        for name in SOURCES:
            spec = weights_spec(model, name)
            if spec["source"] == "file" and not Path(spec["path"]).is_file():
                problems.append(
                    f"weights ({name}) for {model}: file {spec['path']} does not exist"
                )
    if problems:
        raise WorkflowError("invalid configuration:\n  " + "\n  ".join(problems))


RUNS, SKIPPED = grid.plan(
    TRAINED,
    config["models"],
    config["strategies"],
    list(SOURCES),
    config["train_fractions"],
    config["seeds"],
    config["exclude"],
)
for run in RUNS:
    run.update(dir=RUN_DIR.format(**run), log_dir=RUN_LOG_DIR.format(**run))
check_config()
# Cores a train job reserves: all of them when the study has one run, one each when it
# has a run per core or more, so that runs train side by side (a cluster profile sets it
# with set-threads). TensorFlow inside may use up to twice that: see
# scripts/runtime.py:allocated_threads.
TRAIN_THREADS = max(1, (workflow.resource_settings.cores or 1) // max(1, len(RUNS)))
for skip in SKIPPED:
    logger.info(f"skipped {skip['model']} x {skip['strategy']}: {skip['reason']}")


def alternatives(values):
    return "|".join(re.escape(str(value)) for value in values)


wildcard_constraints:
    dataset=alternatives(config["datasets"]),
    model=alternatives(MODELS),
    strategy=alternatives(grid.STRATEGIES),
    weights=alternatives([grid.RANDOM_INIT, *SOURCES]),
    fraction=alternatives(grid.fraction_label(f) for f in config["train_fractions"]),
    seed=r"\d+",
    size=r"\d+",
    external=alternatives(config["datasets"]),
    file_name=alternatives(file_name(e["url"]) for e in WEIGHTS_REGISTRY.values()),


# ---- The study plan: one file that aggregate and report read. ---------------------------
def dataset_file(kind, name):
    return DATASET_FILES[kind].format(dataset=name, size=IMAGE_SIZE)


def external_tests(name):
    """The external tests of a trained dataset, with the files that describe them."""
    return {
        test["dataset"]: {
            **test,
            "overlap": EXTERNAL_OVERLAP.format(dataset=name, external=test["dataset"]),
            "verify": dataset_file("verify", test["dataset"]),
            "positive_class": config["datasets"][test["dataset"]].get("positive_class"),
        }
        for test in config["datasets"][name]["external_tests"]
    }


def study_plan():
    first_seed = min(config["seeds"])
    return {
        "config": config,
        "run_files": RUN_FILES,
        "runs": RUNS,
        "skipped": SKIPPED,
        "datasets": {
            name: {
                "verify": dataset_file("verify", name),
                "conversions": dataset_file("conversions", name),
                "thumbnails": dataset_file("thumbnails", name),
                "split": SPLIT.format(dataset=name, seed=first_seed),
                "log_dir": f"logs/{name}",
                "external": external_tests(name),
            }
            for name in TRAINED
        },
    }


def write_plan(path):
    from scripts.fsutil import write_json

    write_json(path, study_plan())


PLAN_DIGEST = hashlib.sha256(
    json.dumps(study_plan(), sort_keys=True, default=str).encode()
).hexdigest()


def finished_only(paths):
    """With ``allow_missing_runs`` only the files that exist: after ``snakemake
    --keep-going`` left failed runs (or failed data checks), the report covers what
    finished and lists the rest as missing."""
    if config["allow_missing_runs"]:
        return [path for path in paths if Path(path).exists()]
    return paths


def run_files(kind):
    """One output file (``RUN_FILES`` key) of every planned run."""
    return finished_only([f"{run['dir']}/{RUN_FILES[kind]}" for run in RUNS])


def verified_datasets(names=None):
    """With ``allow_missing_runs``, the datasets (of ``names``) whose verification
    finished (the report shows the others as not verified); else all of them."""
    names = config["datasets"] if names is None else names
    return [
        name
        for name in names
        if not config["allow_missing_runs"]
        or Path(dataset_file("verify", name)).exists()
    ]


def dataset_files(kind, names=None):
    """A per-dataset file of every verified dataset (``names``: of those only): cheap
    local steps that follow verification; the decoded-images record only where it exists.
    """
    paths = [dataset_file(kind, name) for name in verified_datasets(names)]
    return finished_only(paths) if kind == "conversions" else paths


def first_splits():
    first_seed = min(config["seeds"])
    return [
        SPLIT.format(dataset=name, seed=first_seed)
        for name in verified_datasets(TRAINED)
    ]


def overlap_files():
    """The near-duplicate check of every trained dataset against each of its external tests."""
    return finished_only(
        [
            EXTERNAL_OVERLAP.format(dataset=name, external=test["dataset"])
            for name in TRAINED
            for test in config["datasets"][name]["external_tests"]
        ]
    )


# ---- Input functions and parameters of the per-dataset and per-run rules. -------------
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


def positive_class(wildcards):
    return config["datasets"][wildcards.dataset].get("positive_class") or ""


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
    return dataset_file("images", wildcards.dataset)


def named_paths(kind, names=None):
    """A params function: the job's named inputs or outputs (``kind``), only ``names``
    if given, as one JSON mapping. The step reads its files by these names (the keys of
    scripts/layout.py), so no second list of options repeats them."""

    def paths(wildcards, input, output):
        files = {"input": input, "output": output}[kind]
        return json.dumps(
            {
                name: path
                for name, path in files.items()
                if names is None or name in names
            }
        )

    return paths


def run_dir(wildcards):
    return RUN_DIR.format(**wildcards)


def run_settings(wildcards):
    """Everything one run depends on besides its inputs, as JSON (a change re-runs it)."""
    settings = {
        **TRAINING,
        "epochs": per_model(TRAINING["epochs"], wildcards.model),
        "partial_stages": per_model(TRAINING["partial_stages"], wildcards.model),
    }
    return json.dumps(
        {
            "training": settings,
            "weights": weights_spec(wildcards.model, wildcards.weights),
            "positive_class": config["datasets"][wildcards.dataset].get(
                "positive_class"
            ),
        },
        sort_keys=True,
    )


def external_settings(wildcards):
    """The run's external tests with their decoded images and index (a few paths, JSON)."""
    return json.dumps(
        [
            {
                "dataset": test["dataset"],
                "class_map": test["class_map"],
                "images": dataset_file("images", test["dataset"]),
                "index": dataset_file("index", test["dataset"]),
            }
            for test in config["datasets"][wildcards.dataset]["external_tests"]
        ],
        sort_keys=True,
    )


def external_inputs(wildcards):
    """The decoded images and index of every external test of the run's dataset."""
    return [
        dataset_file(kind, test["dataset"])
        for test in config["datasets"][wildcards.dataset]["external_tests"]
        for kind in ("images", "index")
    ]


def weights_input(wildcards):
    spec = weights_spec(wildcards.model, wildcards.weights)
    return [spec["path"]] if "path" in spec else []


def registry_entry(wildcards):
    """The weights registry entry whose URL ends in the requested file name."""
    for entry in WEIGHTS_REGISTRY.values():
        if file_name(entry["url"]) == wildcards.file_name:
            return entry
    raise WorkflowError(f"{wildcards.file_name} is not in {config['weights_registry']}")
