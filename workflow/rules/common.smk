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

# TensorFlow-free: Snakemake imports these on the login node at every start.
from scripts.common import fsutil  # noqa: E402
from scripts.plan import config as study_config  # noqa: E402
from scripts.plan import grid  # noqa: E402
from scripts.plan.study import Study, named_paths  # noqa: E402
from scripts.site import slurm_site  # noqa: E402
from scripts.site.snakemake_internals import (  # noqa: E402
    command_line_config,
    config_files,
    profile_resources,
)
from scripts.train.models import MODELS  # noqa: E402
from scripts.weights.weight_files import (  # noqa: E402
    HED_VGG16_FILE,
    file_name,
    load_registry,
)

# Every path the workflow writes.
from scripts.common.layout import (  # noqa: E402
    CONFIRMATION,
    DATASET_FILES,
    EXTERNAL_OVERLAP,
    FEATURE_CACHE,
    PACK_LOG_DIR,
    PACK_RECORD,
    PLAN,
    SPLIT,
    TABLES,
)

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
MIXED = study_config.mixed_datasets(
    config, command_line_config(workflow, with_files=True)
)
if MIXED:
    raise WorkflowError(MIXED)
SETTINGS = {
    "files": config_files(workflow),
    "user_set": sorted(key for key, _ in study_config.leaves(config)),
}
logger.info(f"study settings from {', '.join(SETTINGS['files']) or 'the config given'}")
# Fills in every default: the schema is the one place defaults live.
validate(config, "../schemas/config.schema.yaml")

# Every step runs `python -m scripts <step>` from the project package.
shell.prefix(f"set -euo pipefail; export PYTHONPATH={shlex.quote(str(PROJECT))}; ")

# ---- The study: its runs, packs, files and the rules' input functions. -----------------
REGISTRY_FILE = study_config.project_file(config["weights_registry"], PROJECT)
if not REGISTRY_FILE.is_file():
    raise WorkflowError(
        f"weights_registry: {config['weights_registry']} does not exist"
    )
try:
    # The `train` rule's site values (runs per job, what one run takes, the partition's
    # time limit), from the profile's set-resources like the other site values.
    PACKING = slurm_site.packing(profile_resources(workflow))
    STUDY = Study(config, load_registry(REGISTRY_FILE), PACKING, SETTINGS)
except ValueError as error:
    raise WorkflowError(str(error))
for skip in STUDY.skipped:
    combination = " x ".join(
        skip[key] for key in ("model", "strategy", "weights") if key in skip
    )
    logger.info(f"skipped {combination}: {skip['reason']}")


def available_cores():
    """--cores (None where the run sets none, e.g. a dry run or a cluster run)."""
    try:
        return workflow.cores
    except WorkflowError:
        return None


TRAIN_THREADS = study_config.train_threads(available_cores(), len(STUDY.runs))


def confirmation_packs(wildcards):
    """The confirmation runs' pack records, known once the aggregate checkpoint chose."""
    return STUDY.confirmation_pack_records(checkpoints.aggregate.get().output.verdict)


def alternatives(values):
    return "|".join(re.escape(str(value)) for value in values)


wildcard_constraints:
    dataset=alternatives(config["datasets"]),
    model=alternatives([*MODELS, *config["backbones"]]),
    strategy=alternatives(grid.STRATEGIES),
    weights=alternatives([grid.RANDOM_INIT, grid.OWN_WEIGHTS, *STUDY.sources]),
    fraction=alternatives(grid.fraction_label(f) for f in config["train_fractions"]),
    seed=r"\d+",
    seeds=r"\d+-\d+",
    size=r"\d+",
    external=alternatives(config["datasets"]),
    file_name=alternatives(file_name(e["url"]) for e in STUDY.registry.values()),
