# The Slurm profile's site values (scripts/site/slurm_site.py): placeholders ("your_...") and
# partitions that the cluster does not have stop a real Slurm run before anything is
# submitted (onstart: after the DAG is built and before any job runs, login-node rules
# included); a dry run only warns. What Snakemake does not document is read in
# scripts/site/snakemake_internals.py.
import os
import sys

from snakemake.exceptions import WorkflowError

from scripts.site import slurm_site
from scripts.site.snakemake_internals import (
    executor_name,
    profile_file,
    profile_resources,
)

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
    if executor_name(workflow) != slurm_site.SLURM_EXECUTOR:
        return
    problems = slurm_site.site_problems(SITE_VALUES, slurm_site.cluster_partitions())
    if problems:
        profile = profile_file(sys.argv, dict(os.environ))
        raise WorkflowError(slurm_site.site_error(problems, profile))


onstart:
    check_slurm_site()
