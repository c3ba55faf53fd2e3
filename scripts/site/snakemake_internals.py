"""Every use of Snakemake internals, one small function each.

Snakemake documents no interface for what these read (the profile's resources, the
executor, the command-line config files, the profile in use);
tests/unit/test_slurm_site.py runs each of them on the installed Snakemake's own
classes and fails on a release that changes them. The rules use documented interfaces
for everything else (``config``, ``workflow.cores``, ``workflow.current_basedir``,
``onstart``).
"""

from __future__ import annotations

import contextlib
import os
import shlex
from types import SimpleNamespace

from scripts.site.slurm_site import profile_name


def raw_resource(resource) -> object:
    """A resource's value as written: Snakemake 9 keeps it as ``raw``, 8 as ``orig_arg``."""
    return getattr(resource, "raw", None) or getattr(resource, "orig_arg", None) or resource


def profile_resources(workflow) -> dict[str, object]:
    """The resources of `--default-resources` and `--set-resources` (a profile's
    `default-resources:` and `set-resources:`) as written, by profile key:
    {"default-resources.slurm_account": "'your_account'", "set-resources.train.gpu": "1", ...}."""
    settings = workflow.resource_settings
    values = {}
    if settings.default_resources is not None:
        for arg in settings.default_resources.args:
            name, _, value = arg.partition("=")
            values[f"default-resources.{name}"] = value
    for rule_name, resources in settings.overwrite_resources.items():
        for name, resource in resources.items():
            values[f"set-resources.{rule_name}.{name}"] = raw_resource(resource)
    return values


def executor_name(workflow) -> str | None:
    """The executor plugin's name ("slurm", "local", ...); None before it is chosen
    (while the Snakefile is parsed, in a dry run)."""
    plugin = workflow.executor_plugin
    return None if plugin is None else plugin.name


def config_files(workflow) -> list[str]:
    """The config files the study's settings come from, in the order Snakemake merged
    them: the Snakefile's `configfile:` (unless --replace-workflow-config dropped it),
    then each `--configfile`."""
    given = [str(path) for path in workflow.overwrite_configfiles or []]
    settings = workflow.config_settings
    if given and getattr(settings, "replace_workflow_config", False):
        return given
    return [str(path) for path in workflow.configfiles if str(path) not in given] + given


def command_line_config(workflow, with_files: bool = False) -> dict:
    """The `--config` values, as Snakemake parsed them (``with_files``: the `--configfile`
    files merged under them); none for a module, which gets its config from the
    workflow that imports it."""
    if workflow.modifier.skip_configfile:
        return {}
    settings = workflow.config_settings
    return dict(settings.overwrite_config if with_files else settings.config)


def profile_file(argv: list[str], environ: dict[str, str]) -> str | None:
    """The config file of the profile this run uses (`--profile NAME` or
    $SNAKEMAKE_PROFILE), resolved like Snakemake does; None without a profile."""
    from snakemake.cli import get_profile_dir

    name = profile_name(argv, environ)
    if not name:
        return None
    # A relative name is looked up from where Snakemake started: the working directory,
    # unless --directory changed it; then $PWD, where the shell was.
    for start in (os.getcwd(), environ.get("PWD")):
        with contextlib.suppress(OSError, TypeError), contextlib.chdir(start):
            found = get_profile_dir(name)
            if found:
                return str(found[1])
    return f"profile {name}"


def max_jobs(workflow) -> int:
    """`--jobs` (the profile's ``jobs:``): how many cluster jobs run at once at most."""
    return workflow.resource_settings.nodes or 1


def submitted_jobs(workflow) -> tuple[list, int]:
    """The jobs a Slurm run is about to submit, as :class:`scripts.site.preflight.PlannedJob`
    (resources and the executor's sbatch command at each attempt, up to the last retry),
    and the number of jobs that stay on this node. Called in ``onstart``: the DAG is
    built and nothing is scheduled yet."""
    from snakemake_executor_plugin_slurm.submit_string import get_submit_command
    from snakemake_executor_plugin_slurm.utils import set_gres_string

    from scripts.site.preflight import PlannedJob

    attempts = workflow.execution_settings.retries + 1
    planned, local = [], 0
    for job in workflow.dag.needrun_jobs():
        if job.is_local:
            local += 1
            continue
        resources, commands = [], []
        for attempt in range(1, attempts + 1):
            evaluated = job.rule.expand_resources(job.wildcards_dict, job.input, attempt, skip_evaluation={"tmpdir"})
            at_attempt = SimpleNamespace(resources=evaluated, threads=job.threads, name=job.name)
            partition = evaluated.get("slurm_partition")
            account = evaluated.get("slurm_account")
            params = {"run_uuid": "preflight", "slurm_logfile": os.devnull, "comment_str": f"rule_{job.name}",
                      "account": f" -A {shlex.quote(str(account))}" if account else "",
                      "partition": f" -p {shlex.quote(str(partition))}" if partition else "",
                      "workdir": workflow.workdir_init}
            command = get_submit_command(at_attempt, params, settings=workflow.executor_settings)
            resources.append(dict(evaluated.items()))
            commands.append(command + set_gres_string(at_attempt))
        wildcards = "_".join(f"{value}" for value in job.wildcards_dict.values())
        planned.append(PlannedJob(job.rule.name, wildcards or job.rule.name, resources, commands))
    return planned, local


def slurm_run_id(workflow) -> str:
    """The run id that snakemake-executor-plugin-slurm gives every job of this Snakemake
    run as its job name (`squeue --name`). Called in ``onstart``: the scheduler, and with
    it the executor, exists by then."""
    return workflow.scheduler._executor.run_uuid


def slurm_min_job_age() -> int | None:
    """Slurm's MinJobAge in seconds (how long squeue lists an ended job), as the plugin
    reads it from `scontrol show config`; None where scontrol does not answer."""
    from snakemake_executor_plugin_slurm.job_status_query import get_min_job_age

    return get_min_job_age()
