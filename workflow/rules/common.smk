import json
import math
import re
import shlex
import sys
from pathlib import Path

import yaml
from snakemake.exceptions import WorkflowError
from snakemake.utils import update_config, validate

if not hasattr(workflow.current_basedir, "__fspath__"):
    raise WorkflowError(
        "cxr-transfer can be used as a module only from a local copy: its rules run the "
        "project's Python package (scripts/). Clone it (git clone or git submodule) and set "
        "the module's `snakefile:` to <clone>/workflow/Snakefile."
    )
# The project root, from this file's own location (also right when another workflow
# imports this one as a module, where workflow.basedir is the importer's).
PROJECT = Path(str(workflow.current_basedir)).parents[1]
sys.path.insert(0, str(PROJECT))

from scripts.plan import config as study_config  # noqa: E402  (TensorFlow-free)
from scripts.plan import grid  # noqa: E402
from scripts.site import slurm_site  # noqa: E402

# Every path the workflow writes.
from scripts.common.layout import (  # noqa: E402
    DATASET_FILES,
    EXTERNAL_OVERLAP,
    FEATURE_CACHE,
    FINISHED_RUN,
    PACK_LOG_DIR,
    PACK_RECORD,
    PLAN,
    RUN_DIR,
    RUN_FILES,
    RUN_LOG_DIR,
    SPLIT,
    TABLES,
)
from scripts.train.models import MODELS  # noqa: E402
from scripts.site.snakemake_internals import (  # noqa: E402
    command_line_config,
    config_files,
    profile_resources,
)
from scripts.weights.weight_files import (
    HED_VGG16_FILE,
    file_name,
    load_registry,
)  # noqa: E402

# ---- The study's settings: Snakemake's config, the schema fills in defaults. ----------
# config/config.yaml (the Snakefile's `configfile:`), each --configfile merged on top,
# --config last, as Snakemake merges them; only --config strings are typed by the schema.
SCHEMA_FILE = (
    Path(str(workflow.current_basedir)).parent / "schemas" / "config.schema.yaml"
)
update_config(
    config,
    study_config.typed_by_schema(
        command_line_config(workflow), yaml.safe_load(SCHEMA_FILE.read_text())
    ),
)
if not config.get("datasets"):
    raise WorkflowError(study_config.NO_STUDY)
SETTINGS = {
    "files": config_files(workflow),
    "user_set": sorted(key for key, _ in study_config.leaves(config)),
}
logger.info(f"study settings from {', '.join(SETTINGS['files']) or 'the config given'}")
# Fills in every default: the schema is the one place defaults live.
validate(config, "../schemas/config.schema.yaml")

# Every step runs `python -m scripts <step>` from the project package.
shell.prefix(f"set -euo pipefail; export PYTHONPATH={shlex.quote(str(PROJECT))}; ")

SPLIT_SETTINGS = ("val_fraction", "leakage", "val_folder", "min_val_per_class")
TRAINING = config["training"]
IMAGE_SIZE = TRAINING["image_size"]
TRAINED = study_config.trained_datasets(config)

REGISTRY_FILE = study_config.project_file(config["weights_registry"], PROJECT)
if not REGISTRY_FILE.is_file():
    raise WorkflowError(
        f"weights_registry: {config['weights_registry']} does not exist"
    )
WEIGHTS_REGISTRY = load_registry(REGISTRY_FILE)
try:
    SOURCES = study_config.weights_sources(config)
except ValueError as error:
    raise WorkflowError(str(error))


def weights_spec(model, weights_name):
    """How the backbone of one run is initialised: source, local file and hashes."""
    return study_config.weights_spec(
        model, weights_name, SOURCES, WEIGHTS_REGISTRY, config["weights_cache"]
    )


RUNS, SKIPPED = study_config.planned_runs(config, SOURCES)
PROBLEMS = study_config.config_problems(config, SOURCES, WEIGHTS_REGISTRY)
if PROBLEMS:
    raise WorkflowError("invalid configuration:\n  " + "\n  ".join(PROBLEMS))


def available_cores():
    """--cores (None where the run sets none, e.g. a dry run or a cluster run)."""
    try:
        return workflow.cores
    except WorkflowError:
        return None


TRAIN_THREADS = study_config.train_threads(available_cores(), len(RUNS))
for skip in SKIPPED:
    combination = " x ".join(
        skip[key] for key in ("model", "strategy", "weights") if key in skip
    )
    logger.info(f"skipped {combination}: {skip['reason']}")


def alternatives(values):
    return "|".join(re.escape(str(value)) for value in values)


wildcard_constraints:
    dataset=alternatives(config["datasets"]),
    model=alternatives(MODELS),
    strategy=alternatives(grid.STRATEGIES),
    weights=alternatives([grid.RANDOM_INIT, *SOURCES]),
    fraction=alternatives(grid.fraction_label(f) for f in config["train_fractions"]),
    seed=r"\d+",
    seeds=r"\d+-\d+",
    size=r"\d+",
    external=alternatives(config["datasets"]),
    file_name=alternatives(file_name(e["url"]) for e in WEIGHTS_REGISTRY.values()),


# ---- The study plan: one file that aggregate and report read. ---------------------------
STUDY_PLAN = study_config.study_plan(config, RUNS, SKIPPED, SETTINGS)
PLAN_DIGEST = study_config.plan_digest(STUDY_PLAN)


def write_plan(path):
    from scripts.common.fsutil import write_json

    write_json(path, STUDY_PLAN)


def dataset_file(kind, name):
    return study_config.dataset_file(kind, name, IMAGE_SIZE)


def finished_only(paths):
    """With ``allow_missing_runs`` only the files that exist: after ``snakemake
    --keep-going`` left failed runs (or failed data checks), the report covers what
    finished and lists the rest as missing."""
    if config["allow_missing_runs"]:
        return [path for path in paths if Path(path).exists()]
    return paths


def run_files(kind):
    """One output file (``RUN_FILES`` key) of every planned run; with packed train jobs,
    the record of every pack (a pack job writes its runs' files, which are no output of
    it: a failed run never makes Snakemake delete its siblings')."""
    if RUNS_PER_JOB > 1:
        return finished_only([PACK_RECORD.format(**pack) for pack in PACKS])
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


def dataset_groups(wildcards):
    """The dataset's groups (patients) setting as JSON, for the verify step."""
    return json.dumps(config["datasets"][wildcards.dataset]["groups"], sort_keys=True)


def group_table(wildcards):
    """The dataset's table of groups (patients), where it names one."""
    table = config["datasets"][wildcards.dataset]["groups"].get("table")
    return [table] if table else []


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
    scripts/common/layout.py), so no second list of options repeats them."""

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
    return study_config.run_settings(
        config,
        wildcards.model,
        wildcards.dataset,
        weights_spec(wildcards.model, wildcards.weights),
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


# ---- Packed train jobs: several seeds of one configuration in one job (one process). ----
# The `train` rule's site values (runs per job, what one run takes, the partition's time
# limit), from the profile's set-resources like the other site values.
try:
    PACKING = slurm_site.packing(profile_resources(workflow))
except ValueError as error:
    raise WorkflowError(str(error))
RUNS_PER_JOB = PACKING["runs_per_job"]
PACKS = grid.packs(RUNS, RUNS_PER_JOB)
PLANNED_SEEDS = {}
for planned_run in RUNS:
    PLANNED_SEEDS.setdefault(
        tuple(planned_run[key] for key in grid.CONFIGURATION_KEYS), []
    ).append(planned_run["seed"])


def pack_runs(wildcards):
    """The planned runs of the pack named by the wildcards, in seed order."""
    configuration = {key: wildcards[key] for key in grid.CONFIGURATION_KEYS}
    planned = PLANNED_SEEDS.get(tuple(configuration.values()), [])
    try:
        seeds = grid.pack_seeds(wildcards.seeds, planned)
    except ValueError as error:
        raise WorkflowError(str(error))
    return [{**configuration, "seed": seed} for seed in seeds]


def pack_splits(wildcards):
    return [SPLIT.format(**run) for run in pack_runs(wildcards)]


def pack_members(wildcards):
    """Per seed of the pack: its split, checkpoint, log and run files, as JSON."""
    return json.dumps(
        [
            {
                "seed": run["seed"],
                "split": SPLIT.format(**run),
                "checkpoint": f"{RUN_DIR.format(**run)}/checkpoint",
                "log": f"{RUN_LOG_DIR.format(**run)}/train.log",
                "outputs": {
                    name: f"{RUN_DIR.format(**run)}/{file}"
                    for name, file in RUN_FILES.items()
                },
            }
            for run in pack_runs(wildcards)
        ]
    )


def measured_run_minutes(runs):
    """The longest wall time of the configuration's runs that finished in a pack job
    (their FINISHED_RUN records), in minutes; None before any finished."""
    configuration = {key: runs[0][key] for key in grid.CONFIGURATION_KEYS}
    seconds = []
    for seed in PLANNED_SEEDS[tuple(configuration.values())]:
        record = Path(RUN_DIR.format(**configuration, seed=seed)) / FINISHED_RUN
        if record.exists():
            seconds.append(json.loads(record.read_text())["wall_seconds"])
    return max(seconds) / 60 if seconds else None


def pack_runtime(wildcards, attempt):
    """Minutes for the runs of the pack still to train: what one run of the
    configuration measurably took (1.5x: another node may be slower), else the site's
    run_minutes, times the turns those runs take (runs_at_once train side by side) and
    the attempt; at most the site's max_runtime."""
    runs = pack_runs(wildcards)
    to_train = [
        run for run in runs if not (Path(RUN_DIR.format(**run)) / FINISHED_RUN).exists()
    ]
    measured = measured_run_minutes(runs)
    per_run = PACKING["run_minutes"] if measured is None else max(1.0, 1.5 * measured)
    turns = math.ceil(max(1, len(to_train)) / PACKING["runs_at_once"])
    return grid.pack_minutes(per_run, turns, attempt, PACKING["max_runtime"])


def run_runtime(wildcards, attempt):
    """Minutes for one run's job: the site's run_minutes times the attempt, capped."""
    return grid.pack_minutes(PACKING["run_minutes"], 1, attempt, PACKING["max_runtime"])
