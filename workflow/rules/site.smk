# The Slurm profile's site values (scripts/site/slurm_site.py): placeholders ("your_...") and
# partitions that the cluster does not have stop a real Slurm run before anything is
# submitted (onstart: after the DAG is built and before any job runs, login-node rules
# included); a dry run only warns. What Snakemake does not document is read in
# scripts/site/snakemake_internals.py.
import os
import sys

from snakemake.exceptions import WorkflowError

from scripts.site import preemption, preflight, slurm_site
from scripts.site.snakemake_internals import (
    executor_name,
    max_jobs,
    profile_file,
    profile_resources,
    slurm_min_job_age,
    slurm_run_id,
    submitted_jobs,
)
from scripts.train.models import MODELS, parameters

SITE_VALUES = slurm_site.site_values(profile_resources(workflow))
# Study-wide and whole-dataset rules that the profile sizes (set-resources) are CPU jobs
# on a cluster; without resources they run on the login node. A local run runs every
# rule here either way.
CLUSTER_JOBS = slurm_site.cluster_job_rules(profile_resources(workflow))


def on_login_node(rule_name):
    """A rule's `localrule:` value: whether a cluster run keeps it on the login node."""
    return rule_name not in CLUSTER_JOBS


# The executor is not known yet while the Snakefile is parsed: dry runs (and local runs
# with the Slurm profile) only warn; a real Slurm run stops in onstart below.
for problem in slurm_site.placeholder_problems(SITE_VALUES):
    logger.warning(
        slurm_site.site_warning(problem, profile_file(sys.argv, dict(os.environ)))
    )


def check_slurm_site():
    """Stop a Slurm run whose profile still has placeholders or unknown partitions."""
    problems = slurm_site.site_problems(SITE_VALUES, slurm_site.cluster_partitions())
    if problems:
        profile = profile_file(sys.argv, dict(os.environ))
        raise WorkflowError(slurm_site.site_error(problems, profile))


def slurm_preflight():
    """Print what the run will submit and cost; stop, naming Slurm's reason and the
    profile key, where Slurm would refuse a job or keep it pending for ever
    (scripts/site/preflight.py)."""
    jobs, login_jobs = submitted_jobs(workflow)
    sizes = {model: parameters(model) for model in MODELS} | {
        model: parameters(model, backbone_file=declaration)
        for model, declaration in config["backbones"].items()
    }
    disk = preflight.disk_bytes(
        STUDY.runs_to_train(),
        sizes,
        STUDY.weights_bytes(sizes),
        min(max_jobs(workflow), sum(1 for job in jobs if job.gpus))
        * PACKING["runs_at_once"],
    )
    retries = workflow.execution_settings.retries
    for line in preflight.summary(jobs, login_jobs, retries, disk):
        logger.info(line)
    shown = preflight.run_text(["scontrol", "-o", "show", "partition"])
    partitions, default = preflight.parse_partitions(shown or "")
    qos = preflight.run_text(["sacctmgr", "-nP", "show", "qos", "format=Name,MaxWall"])
    problems = preflight.time_limit_problems(
        jobs,
        partitions,
        default,
        None if qos is None else preflight.parse_qos(qos),
        profile_resources(workflow),
        getattr(workflow.executor_settings, "qos", None),
    )
    problems += preflight.refusals(jobs)
    if problems:
        profile = profile_file(sys.argv, dict(os.environ))
        raise WorkflowError(preflight.preflight_error(problems, profile))


onstart:
    if executor_name(workflow) == slurm_site.SLURM_EXECUTOR:
        check_slurm_site()
        slurm_preflight()
        # PreemptMode=CANCEL sites: the plugin would wait for ever for a preempted job;
        # the watch requeues it (scripts/site/preemption.py).
        preemption.start_watch(slurm_run_id(workflow), slurm_min_job_age(), logger)
