"""The planned study as its rules see it: the runs, the packs and every file, and the
input functions, parameters and time limits of the rules (workflow/rules/*.smk refer to
``STUDY.<method>``). Built once by workflow/rules/common.smk from the validated config.

TensorFlow-free and Snakemake-free: an input function gets Snakemake's wildcards, which
it reads by attribute (any object with the wildcard names works, as in the tests).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from types import SimpleNamespace

from scripts.common.layout import EXTERNAL_OVERLAP, FINISHED_RUN, PACK_RECORD, RUN_DIR, RUN_FILES, RUN_LOG_DIR, SPLIT
from scripts.plan import config as study_config
from scripts.plan import grid
from scripts.weights.weight_files import file_name

# The data settings a split depends on (as a rule's parameter: a change re-runs the splits).
SPLIT_SETTINGS = ("val_fraction", "leakage", "val_folder", "min_val_per_class")


class Study:
    """``config``: validated (defaults filled in); ``registry``: the weights registry;
    ``packing``: the train rule's site values (scripts/site/slurm_site.py ``packing``);
    ``settings``: where the config came from (recorded in the plan). A ValueError names
    what is wrong with the config beyond the schema."""

    def __init__(self, config: dict, registry: dict, packing: dict, settings: dict):
        self.config = config
        self.registry = registry
        self.packing = packing
        self.sources = study_config.weights_sources(config)
        problems = study_config.config_problems(config, self.sources, registry)
        if problems:
            raise ValueError("invalid configuration:\n  " + "\n  ".join(problems))
        self.runs, self.skipped = study_config.planned_runs(config, self.sources)
        self.trained = study_config.trained_datasets(config)
        self.image_size = config["training"]["image_size"]
        self.packs = grid.packs(self.runs, packing["runs_per_job"])
        too_long = grid.pack_too_long(packing["run_minutes"], max((len(p["members"]) for p in self.packs), default=1),
                                      packing["runs_at_once"], packing["max_runtime"], measured=False)
        if too_long:
            raise ValueError(too_long)
        self.planned_seeds: dict[tuple, list[int]] = {}
        for run in self.runs:
            self.planned_seeds.setdefault(tuple(run[key] for key in grid.CONFIGURATION_KEYS), []).append(run["seed"])
        self.confirmation_seeds = study_config.confirmation_seeds(config)
        self.plan = study_config.study_plan(config, self.runs, self.skipped, settings)
        self.plan_digest = study_config.plan_digest(self.plan)
        self.split_settings = json.dumps({key: config["data"][key] for key in SPLIT_SETTINGS}, sort_keys=True)
        self.colour_settings = json.dumps(config["data"]["colour_overlays"], sort_keys=True)

    # ---- Files of the whole study ------------------------------------------------------
    def dataset_file(self, kind: str, name: str) -> str:
        return study_config.dataset_file(kind, name, self.image_size)

    def finished_only(self, paths: list[str]) -> list[str]:
        """With ``allow_missing_runs`` only the files that exist: after ``snakemake
        --keep-going`` left failed runs (or failed data checks), the report covers what
        finished and lists the rest as missing."""
        if self.config["allow_missing_runs"]:
            return [path for path in paths if Path(path).exists()]
        return paths

    def pack_records(self) -> list[str]:
        """The record of every pack, which its train job writes once all its runs
        finished: what aggregate and report wait for. A pack's runs' files are no output of
        its job, so that a failed run never makes Snakemake delete its siblings'."""
        return self.finished_only([PACK_RECORD.format(**pack) for pack in self.packs])

    def verified_datasets(self, names=None) -> list[str]:
        """With ``allow_missing_runs``, the datasets (of ``names``) whose verification
        finished (the report shows the others as not verified); else all of them."""
        names = self.config["datasets"] if names is None else names
        return [name for name in names
                if not self.config["allow_missing_runs"] or Path(self.dataset_file("verify", name)).exists()]

    def dataset_files(self, kind: str, names=None) -> list[str]:
        """A per-dataset file of every verified dataset (``names``: of those only): cheap
        local steps that follow verification; the decoded-images record only where it exists."""
        paths = [self.dataset_file(kind, name) for name in self.verified_datasets(names)]
        return self.finished_only(paths) if kind == "conversions" else paths

    def first_splits(self) -> list[str]:
        first_seed = min(self.config["seeds"])
        return [SPLIT.format(dataset=name, seed=first_seed) for name in self.verified_datasets(self.trained)]

    def overlap_files(self) -> list[str]:
        """The near-duplicate check of every trained dataset against each of its external tests."""
        return self.finished_only([EXTERNAL_OVERLAP.format(dataset=name, external=test["dataset"])
                                   for name in self.trained
                                   for test in self.config["datasets"][name]["external_tests"]])

    # ---- Input functions and parameters of the per-dataset rules --------------------------
    def dataset(self, wildcards) -> dict:
        return self.config["datasets"][wildcards.dataset]

    def kaggle_marker(self, wildcards) -> list[str]:
        """A downloadable dataset is verified only after its download rule ran."""
        return [f"resources/downloads/{wildcards.dataset}.json"] if "kaggle" in self.dataset(wildcards) else []

    def dataset_manifest(self, wildcards) -> str:
        return self.dataset(wildcards)["manifest"]

    def manifest_input(self, wildcards) -> list[str]:
        """The manifest, unless a Kaggle download will write it (no shipped manifest)."""
        manifest = self.dataset_manifest(wildcards)
        return [] if self.kaggle_marker(wildcards) and not Path(manifest).is_file() else [manifest]

    def dataset_groups(self, wildcards) -> str:
        """The dataset's groups (patients) setting as JSON, for the verify step."""
        return json.dumps(self.dataset(wildcards)["groups"], sort_keys=True)

    def group_table(self, wildcards) -> list[str]:
        """The dataset's table of groups (patients), where it names one."""
        table = self.dataset(wildcards)["groups"].get("table")
        return [table] if table else []

    def dataset_root(self, wildcards) -> str:
        return self.dataset(wildcards)["path"]

    def external_root(self, wildcards) -> str:
        return self.config["datasets"][wildcards.external]["path"]

    def external_index(self, wildcards) -> str:
        return self.dataset_file("index", wildcards.external)

    def positive_class(self, wildcards) -> str:
        return self.dataset(wildcards).get("positive_class") or ""

    def dataset_listing(self, wildcards) -> list[tuple[str, int]]:
        """Names and sizes of the dataset's files: adding, removing or resizing any of
        them re-runs verification (content changes are caught by the manifest check itself)."""
        root = Path(self.dataset_root(wildcards))
        return sorted((str(path.relative_to(root)), path.stat().st_size)
                      for path in root.glob("*/*/*") if path.is_file())

    def images_cache(self, wildcards) -> str:
        return self.dataset_file("images", wildcards.dataset)

    # ---- Input functions and parameters of the train rule ------------------------------
    def weights_spec(self, model: str, weights_name: str) -> dict:
        """How the backbone of one run is initialised: source, local file and hashes."""
        return study_config.weights_spec(model, weights_name, self.sources, self.registry,
                                         self.config["weights_cache"], self.config["backbones"])

    def weights_input(self, wildcards) -> list[str]:
        """The run's weights file; a declared backbone file's too where it starts from
        random weights (its architecture is in the file)."""
        spec = self.weights_spec(wildcards.model, wildcards.weights)
        declared = self.config["backbones"].get(wildcards.model)
        return [spec["path"]] if "path" in spec else [declared["path"]] if declared else []

    def registry_entry(self, wildcards) -> dict:
        """The weights registry entry whose URL ends in the requested file name."""
        for entry in self.registry.values():
            if file_name(entry["url"]) == wildcards.file_name:
                return entry
        raise ValueError(f"{wildcards.file_name} is not in {self.config['weights_registry']}")

    def run_settings(self, wildcards) -> str:
        """Everything one run depends on besides its inputs, as JSON (a change re-runs it)."""
        return study_config.run_settings(self.config, wildcards.model, wildcards.dataset,
                                         self.weights_spec(wildcards.model, wildcards.weights))

    def external_tests(self, wildcards) -> list[dict]:
        return self.dataset(wildcards)["external_tests"]

    def external_settings(self, wildcards) -> str:
        """The run's external tests with their decoded images and index (a few paths, JSON)."""
        return json.dumps([{"dataset": test["dataset"], "class_map": test["class_map"],
                            "images": self.dataset_file("images", test["dataset"]),
                            "index": self.dataset_file("index", test["dataset"])}
                           for test in self.external_tests(wildcards)], sort_keys=True)

    def external_inputs(self, wildcards) -> list[str]:
        """The decoded images and index of every external test of the run's dataset."""
        return [self.dataset_file(kind, test["dataset"])
                for test in self.external_tests(wildcards) for kind in ("images", "index")]

    # ---- Packs: several seeds of one configuration in one train job ----------------------
    def pack_runs(self, wildcards) -> list[dict]:
        """The planned runs of the pack named by the wildcards, in seed order: of the
        study's seeds, or of the confirmation seeds where the pack starts with one (the two
        never share a seed, :func:`scripts.plan.config.confirmation_problems`)."""
        configuration = {key: wildcards[key] for key in grid.CONFIGURATION_KEYS}
        planned = self.planned_seeds.get(tuple(configuration.values()), [])
        if planned and int(wildcards.seeds.partition("-")[0]) in self.confirmation_seeds:
            planned = self.confirmation_seeds
        return [{**configuration, "seed": seed} for seed in grid.pack_seeds(wildcards.seeds, planned)]

    # ---- The confirmation stage: fresh seeds of the validation-chosen configuration -------
    def confirmation(self, verdict: str) -> dict:
        """Per trained dataset, what the confirmation stage trains
        (:func:`scripts.plan.config.confirmation_plan`) after the aggregate step wrote
        ``verdict`` (its choice on validation)."""
        chosen = {name: part.get("chosen") for name, part in json.loads(Path(verdict).read_text())["datasets"].items()}
        return study_config.confirmation_plan(self.config, chosen, set(self.planned_seeds))

    def confirmation_pack_records(self, verdict: str) -> list[str]:
        """The pack records of the confirmation runs (packed like the study's runs), which
        the confirm step waits for once ``verdict`` names the chosen configurations."""
        runs = [run for stage in self.confirmation(verdict).values() for run in stage["runs"]]
        packs = grid.packs(runs, self.packing["runs_per_job"])
        return self.finished_only([PACK_RECORD.format(**pack) for pack in packs])

    def pack_splits(self, wildcards) -> list[str]:
        return [SPLIT.format(**run) for run in self.pack_runs(wildcards)]

    def pack_members(self, wildcards) -> str:
        """Per seed of the pack: its split, checkpoint, log and run files, as JSON."""
        return json.dumps([{"seed": run["seed"], "split": SPLIT.format(**run),
                            "checkpoint": f"{RUN_DIR.format(**run)}/checkpoint",
                            "log": f"{RUN_LOG_DIR.format(**run)}/train.log",
                            "outputs": {name: f"{RUN_DIR.format(**run)}/{file}" for name, file in RUN_FILES.items()}}
                           for run in self.pack_runs(wildcards)])

    def current_record(self, run: dict) -> dict | None:
        """The run's FINISHED_RUN record if it is of the run as planned now
        (:func:`scripts.plan.grid.is_current`: the same settings and images); else None."""
        path = Path(RUN_DIR.format(**run)) / FINISHED_RUN
        if not path.exists():
            return None
        record = json.loads(path.read_text())
        names = SimpleNamespace(**run)
        current = grid.is_current(record.get("identity"), run, json.loads(self.run_settings(names)),
                                  self.images_cache(names), json.loads(self.external_settings(names)))
        return record if current else None

    def measured_run_minutes(self, runs: list[dict]) -> float | None:
        """The longest wall time of the configuration's runs that finished in a pack job
        as planned now (their current FINISHED_RUN records), in minutes; None before any
        finished."""
        configuration = {key: runs[0][key] for key in grid.CONFIGURATION_KEYS}
        seconds = [record["wall_seconds"] for seed in self.planned_seeds[tuple(configuration.values())]
                   if (record := self.current_record({**configuration, "seed": seed}))]
        return max(seconds) / 60 if seconds else None

    def pack_runtime(self, wildcards, attempt: int) -> int:
        """Minutes for the runs of the pack still to train (those without a current
        finished record): what one run of the configuration measurably took (1.5x:
        another node may be slower), else the site's run_minutes, times the turns those
        runs take (runs_at_once train side by side) and the attempt; at most the site's
        max_runtime. A ValueError where the first attempt would need more than
        max_runtime (Snakemake stops, naming it, before submitting the job)."""
        runs = self.pack_runs(wildcards)
        to_train = [run for run in runs if self.current_record(run) is None]
        measured = self.measured_run_minutes(runs)
        per_run = self.packing["run_minutes"] if measured is None else max(1.0, 1.5 * measured)
        too_long = grid.pack_too_long(per_run, max(1, len(to_train)), self.packing["runs_at_once"],
                                      self.packing["max_runtime"], measured=measured is not None)
        if too_long:
            raise ValueError(f"pack {wildcards.seeds} of {grid.config_title(wildcards)}: {too_long}")
        turns = math.ceil(max(1, len(to_train)) / self.packing["runs_at_once"])
        return grid.pack_minutes(per_run, turns, attempt, self.packing["max_runtime"])

    def runs_to_train(self) -> list[dict]:
        """The planned runs without a current finished record."""
        return [run for run in self.runs if self.current_record(run) is None]

    def weights_bytes(self, parameters: dict[str, int]) -> int:
        """The pretrained weight files the runs to train start from: each file's size
        where it is already downloaded, else 4 bytes a parameter of its model (the
        ``*_notop`` files hold the backbone's float32 weights)."""
        files = {}
        for run in self.runs_to_train():
            path = self.weights_spec(run["model"], run["weights"]).get("path")
            if path and path not in files:
                files[path] = Path(path).stat().st_size if Path(path).is_file() else 4 * parameters[run["model"]]
        return sum(files.values())

    def unfinished_runs(self, shown: int = 20) -> list[str]:
        """Lines for the end of a failed workflow run: how many planned runs have no
        current finished record, and the first ``shown`` with their logs."""
        runs = self.runs_to_train()
        if not runs:
            return []
        lines = [f"{len(runs)} of {len(self.runs)} runs have not finished (their logs):"]
        lines += [f"  {run['dir']}: {run['log_dir']}/train.log" for run in runs[:shown]]
        return lines + ([f"  ... and {len(runs) - shown} more (results/runs.csv after a report)"]
                        if len(runs) > shown else [])


def named_paths(kind: str, names=None):
    """A params function: the job's named inputs or outputs (``kind``), only ``names``
    if given, as one JSON mapping. The step reads its files by these names (the keys of
    scripts/common/layout.py), so no second list of options repeats them."""

    def paths(wildcards, input, output):
        files = {"input": input, "output": output}[kind]
        return json.dumps({name: path for name, path in files.items() if names is None or name in names})

    return paths
