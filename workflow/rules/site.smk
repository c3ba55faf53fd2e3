# What the user's own files decide, before rules/common.smk validates the config:
# 1. The datasets of `--configfile` files replace the default config's: Snakemake merges
#    command-line config files over the Snakefile's `configfile:`, which would keep the
#    demo dataset in every user's grid. Other keys still merge (a file without
#    `datasets` extends the default), and `--config` overrides apply on top.
# 2. The Slurm profile's site values: placeholders ("your_...") and partitions that the
#    cluster does not have stop a real run before anything is submitted (onstart, after
#    the DAG is built and before any job runs, login-node rules included); a dry run
#    only warns.
import contextlib
import os
import re
import subprocess
import sys
from pathlib import Path

import yaml
from snakemake.exceptions import WorkflowError
from snakemake.utils import update_config

PLACEHOLDER_PREFIX = "your_"
SLURM_EXECUTOR = "slurm"
LITERAL = re.compile(r"[\w.,:@+-]+")  # a name, not an expression like "32000 * attempt"


def user_datasets(configfiles, overrides):
    """The datasets of the command-line config files (later files extend earlier ones)
    with `--config datasets...` on top; None when no user file names any."""
    datasets = None
    for path in configfiles:
        loaded = yaml.safe_load(Path(path).read_text()) or {}
        if "datasets" in loaded:
            datasets = datasets or {}
            update_config(datasets, loaded["datasets"] or {})
    if datasets is not None and isinstance(overrides.get("datasets"), dict):
        update_config(datasets, overrides["datasets"])
    return datasets


def profile_file():
    """The config file of the profile this run uses (`--profile NAME` or
    $SNAKEMAKE_PROFILE, resolved like Snakemake does, from where it was started)."""
    from snakemake.cli import get_profile_dir

    names = [arg.split("=", 1)[1] for arg in sys.argv if arg.startswith("--profile=")]
    names += [
        sys.argv[i + 1] for i, arg in enumerate(sys.argv[:-1]) if arg == "--profile"
    ]
    name = (names or [os.environ.get("SNAKEMAKE_PROFILE", "")])[-1]
    if not name:
        return None
    # A relative name is looked up from where Snakemake started: the working directory,
    # unless --directory changed it; then $PWD, where the shell was.
    for start in (os.getcwd(), os.environ.get("PWD")):
        with contextlib.suppress(OSError, TypeError), contextlib.chdir(start):
            found = get_profile_dir(name)
            if found:
                return str(found[1])
    return f"profile {name}"


def literal(resource):
    """A resource's value as written (Snakemake 9: `raw`, 8: `orig_arg`), unquoted;
    None for expressions of the job such as "32000 * attempt"."""
    value = (
        getattr(resource, "raw", None)
        or getattr(resource, "orig_arg", None)
        or resource
    )
    if isinstance(value, str):
        value = value.strip()
        if len(value) > 1 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        return value if LITERAL.fullmatch(value) else None
    return None


def site_values():
    """{"default-resources.slurm_account": "your_account", ...}: every literal string
    resource of the profile (and of --default-resources/--set-resources)."""
    settings = workflow.resource_settings
    values = {}
    if settings.default_resources is not None:
        for arg in settings.default_resources.args:
            name, _, value = arg.partition("=")
            values[f"default-resources.{name}"] = literal(value)
    for rule_name, resources in settings.overwrite_resources.items():
        for name, resource in resources.items():
            values[f"set-resources.{rule_name}.{name}"] = literal(resource)
    return {key: value for key, value in values.items() if value is not None}


def placeholder_problems(values):
    return [
        f"{key}: still the placeholder {value!r}"
        for key, value in values.items()
        if value.startswith(PLACEHOLDER_PREFIX)
    ]


def cluster_partitions():
    """Partition names as `sinfo` lists them; None where sinfo cannot tell."""
    try:
        listed = subprocess.run(
            ["sinfo", "-h", "-o", "%R"], capture_output=True, text=True, timeout=60
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    names = set(listed.stdout.split())
    return names if listed.returncode == 0 and names else None


def partition_problems(values, partitions):
    if any(key.endswith(("cluster", "clusters")) for key in values):
        return []  # another cluster's partitions are not in the local sinfo
    return [
        f"{key}: partition {value!r} does not exist on this cluster "
        f"(sinfo lists: {', '.join(sorted(partitions))})"
        for key, value in values.items()
        if key.endswith(".slurm_partition")
        and not value.startswith(PLACEHOLDER_PREFIX)
        and value not in partitions
    ]


SITE_HELP = (
    "Edit these keys in {profile}: your account (`sacctmgr show assoc user=$USER "
    "format=account`; on a cluster without accounts delete the slurm_account line) and "
    "partitions from `sinfo -s` (delete default-resources.slurm_partition to use the "
    "default partition). See config/README.md, section 'Slurm profile'."
)


def check_slurm_site():
    """Stop a Slurm run whose profile still has placeholders or unknown partitions."""
    if (
        workflow.executor_plugin is None
        or workflow.executor_plugin.name != SLURM_EXECUTOR
    ):
        return
    values = site_values()
    problems = placeholder_problems(values)
    partitions = cluster_partitions()
    if partitions is not None:
        problems += partition_problems(values, partitions)
    if problems:
        profile = profile_file() or "your Slurm profile"
        raise WorkflowError(
            f"site values of the Slurm profile ({profile}) are not set; nothing was "
            "submitted:\n  "
            + "\n  ".join(problems)
            + "\n"
            + SITE_HELP.format(profile=profile)
        )


if not hasattr(workflow.current_basedir, "__fspath__"):
    raise WorkflowError(
        "cxr-transfer can be used as a module only from a local copy: its rules run the "
        "project's Python package (scripts/). Clone it (git clone or git submodule) and set "
        "the module's `snakefile:` to <clone>/workflow/Snakefile."
    )

own_datasets = user_datasets(
    workflow.overwrite_configfiles or [], workflow.config_settings.config or {}
)
if own_datasets is not None:
    config["datasets"] = own_datasets

# Dry runs (and local runs with the Slurm profile) only warn: the executor is not known
# yet while the Snakefile is parsed; a real Slurm run stops in onstart below.
for problem in placeholder_problems(site_values()):
    logger.warning(
        f"Slurm profile ({profile_file() or 'your Slurm profile'}) {problem}: a run "
        "through Slurm stops before submitting anything until it is set."
    )


onstart:
    check_slurm_site()
