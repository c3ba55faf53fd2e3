"""The Slurm profile's site values: placeholders ("your_...") and partitions that the
cluster does not have stop a real Slurm run before anything is submitted.

The values arrive as the profile wrote them ({"default-resources.slurm_account":
"'your_account'", ...}; scripts/site/snakemake_internals.py reads them); workflow/rules/site.smk
warns while the workflow is parsed and stops the run in ``onstart``.
"""

from __future__ import annotations

import re
import subprocess

PLACEHOLDER_PREFIX = "your_"
SLURM_EXECUTOR = "slurm"
LITERAL = re.compile(r"[\w.,:@+-]+")  # a name, not an expression like "32000 * attempt"

# Rules that read every raw image of a dataset or every run of the study: on the login
# node by default, a CPU job on the cluster where the profile sizes them (set-resources).
# The downloads stay on the login node whatever the profile says (compute nodes are
# offline), and so do plan (it writes what the Snakefile computed) and split (seconds).
MOVABLE_RULES = ("verify", "leakage", "thumbnails", "external_overlap", "aggregate", "report")

SITE_HELP = (
    "Edit these keys in {profile}: your account (`sacctmgr show assoc user=$USER "
    "format=account`; on a cluster without accounts delete the slurm_account line) and "
    "partitions from `sinfo -s` (delete default-resources.slurm_partition to use the "
    "default partition). See config/README.md, section 'Slurm profile'."
)


def literal(value) -> str | None:
    """A resource's value as written, unquoted; None for anything but a plain name
    (numbers, expressions of the job such as "32000 * attempt")."""
    if not isinstance(value, str):
        return None
    value = value.strip()
    if len(value) > 1 and value[0] == value[-1] and value[0] in "'\"":
        value = value[1:-1]
    return value if LITERAL.fullmatch(value) else None


def site_values(resources: dict) -> dict[str, str]:
    """The literal string values among ``resources`` ({"default-resources.slurm_account":
    "'your_account'", ...}), unquoted."""
    values = {key: literal(value) for key, value in resources.items()}
    return {key: value for key, value in values.items() if value is not None}


def cluster_job_rules(resources: dict) -> set[str]:
    """The rules of ``MOVABLE_RULES`` that the profile sizes (``resources``: by profile
    key, {"set-resources.aggregate.mem_mb": "16000", ...}): these run as cluster jobs."""
    sized = {key.split(".")[1] for key in resources if key.startswith("set-resources.")}
    return sized & set(MOVABLE_RULES)


def placeholder_problems(values: dict[str, str]) -> list[str]:
    return [
        f"{key}: still the placeholder {value!r}"
        for key, value in values.items()
        if value.startswith(PLACEHOLDER_PREFIX)
    ]


def partition_problems(values: dict[str, str], partitions: set[str]) -> list[str]:
    """Partitions that ``sinfo`` does not list (placeholders are reported as such)."""
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


def parse_partitions(listed: str) -> set[str] | None:
    """Partition names from `sinfo -h -o %R` output; None when it lists none."""
    return set(listed.split()) or None


def cluster_partitions() -> set[str] | None:
    """Partition names as `sinfo` lists them; None where sinfo cannot tell."""
    try:
        listed = subprocess.run(["sinfo", "-h", "-o", "%R"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return parse_partitions(listed.stdout) if listed.returncode == 0 else None


def site_problems(values: dict[str, str], partitions: set[str] | None) -> list[str]:
    """Every placeholder, and every unknown partition when ``partitions`` are known."""
    problems = placeholder_problems(values)
    if partitions is not None:
        problems += partition_problems(values, partitions)
    return problems


def site_error(problems: list[str], profile: str | None) -> str:
    """The message that stops a Slurm run, naming the profile file and each key."""
    profile = profile or "your Slurm profile"
    return (
        f"site values of the Slurm profile ({profile}) are not set; nothing was submitted:\n  "
        + "\n  ".join(problems)
        + "\n"
        + SITE_HELP.format(profile=profile)
    )


def site_warning(problem: str, profile: str | None) -> str:
    """A dry run's (or a local run's) note on one placeholder."""
    return (f"Slurm profile ({profile or 'your Slurm profile'}) {problem}: a run through Slurm stops "
            "before submitting anything until it is set.")


def profile_name(argv: list[str], environ: dict[str, str]) -> str | None:
    """The profile named on the command line (the last `--profile`), else
    $SNAKEMAKE_PROFILE; None without one."""
    names = [environ.get("SNAKEMAKE_PROFILE", "")]
    for position, arg in enumerate(argv):
        if arg.startswith("--profile="):
            names.append(arg.split("=", 1)[1])
        elif arg == "--profile" and position + 1 < len(argv):
            names.append(argv[position + 1])
    return names[-1] or None


# How the `train` rule packs runs into jobs: site values of the profile's
# set-resources.train (the plugin passes no resource of these names to sbatch).
PACKING = {"runs_per_job": 1, "runs_at_once": 1, "run_minutes": 30, "max_runtime": None}
# A pack's job carries a path per run file of each run on its command line (~1.3 kB a
# run): 64 runs stay far below Linux's 128 KiB limit on one argument.
MAX_RUNS_PER_JOB = 64


def packing(resources: dict) -> dict:
    """``runs_per_job`` (runs of one configuration per train job), ``runs_at_once``
    (processes of a job training side by side on its GPU), ``run_minutes`` (what one
    run takes, before any finished) and ``max_runtime`` (the partition's MaxTime in
    minutes; None: no cap) from ``resources`` (profile key → value as written); a value
    that is no number of the right range names its key."""
    limits = {"runs_per_job": f"an integer from 1 to {MAX_RUNS_PER_JOB}",
              "runs_at_once": f"an integer from 1 to {MAX_RUNS_PER_JOB}",
              "run_minutes": "a positive number of minutes", "max_runtime": "a positive integer (minutes)"}
    settings = dict(PACKING)
    for name in PACKING:
        written = resources.get(f"set-resources.train.{name}")
        if written is None:
            continue
        try:
            value = float(str(written).strip().strip("'\""))
        except ValueError:
            value = None
        wrong = value is None or value <= 0 or (name != "run_minutes" and value != int(value))
        if name in ("runs_per_job", "runs_at_once") and not wrong:
            wrong = value > MAX_RUNS_PER_JOB
        if wrong:
            raise ValueError(f"set-resources.train.{name}: {written!r} is not {limits[name]} (config/README.md)")
        settings[name] = value if name == "run_minutes" else int(value)
    return settings
