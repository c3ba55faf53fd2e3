"""scripts/site/slurm_site.py (the Slurm profile's site values) and
scripts/site/snakemake_internals.py, the one place that reads Snakemake internals: run on the
installed Snakemake's own classes, these tests fail on a release that changes them."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from types import SimpleNamespace

import pytest

from scripts.site import slurm_site
from scripts.site import snakemake_internals as internals

PROFILE_VALUES = {"default-resources.slurm_account": "'your_account'",
                  "default-resources.slurm_partition": '"cpu"',
                  "default-resources.mem_mb": "4000",
                  "set-resources.train.slurm_partition": "'gpu'",
                  "set-resources.train.mem_mb": "12000 * attempt"}


# ---- Site values -------------------------------------------------------------------------

@pytest.mark.parametrize("written, value", [
    ("'your_account'", "your_account"), ('"gpu"', "gpu"), (" cpu ", "cpu"), ("a100&ib", None),
    ("12000 * attempt", None), (4000, None), ("'", None), ("gpu:a100:1", "gpu:a100:1")])
def test_literal_is_a_plain_name_unquoted(written, value):
    assert slurm_site.literal(written) == value


def test_site_values_keep_the_literal_names_only():
    assert slurm_site.site_values(PROFILE_VALUES) == {
        "default-resources.slurm_account": "your_account", "default-resources.slurm_partition": "cpu",
        "default-resources.mem_mb": "4000", "set-resources.train.slurm_partition": "gpu"}


def test_placeholders_and_unknown_partitions_are_problems_naming_the_key():
    values = slurm_site.site_values(PROFILE_VALUES)
    assert slurm_site.placeholder_problems(values) == [
        "default-resources.slurm_account: still the placeholder 'your_account'"]
    assert slurm_site.partition_problems(values, {"gpu", "debug"}) == [
        "default-resources.slurm_partition: partition 'cpu' does not exist on this cluster "
        "(sinfo lists: debug, gpu)"]
    assert slurm_site.partition_problems({**values, "default-resources.clusters": "other"}, {"gpu"}) == []
    assert slurm_site.partition_problems({"x.slurm_partition": "your_gpu"}, {"gpu"}) == []
    assert slurm_site.site_problems(values, None) == slurm_site.placeholder_problems(values)
    assert len(slurm_site.site_problems(values, {"gpu"})) == 2


def test_cluster_jobs_are_the_movable_rules_the_profile_sizes():
    """Only set-resources count (default-resources apply to every rule), and only for
    rules that may leave the login node (the downloads need the internet)."""
    resources = {**PROFILE_VALUES, "set-resources.aggregate.mem_mb": "8000 * attempt",
                 "set-resources.verify.runtime": "60", "set-resources.fetch_weights.mem_mb": "1000"}
    assert slurm_site.cluster_job_rules(resources) == {"aggregate", "verify"}
    assert slurm_site.cluster_job_rules(PROFILE_VALUES) == set()


def test_partitions_from_sinfo_output():
    assert slurm_site.parse_partitions("gpu\ncpu\ngpu\n") == {"gpu", "cpu"}
    assert slurm_site.parse_partitions("\n") is None


def test_site_error_names_the_profile_and_each_key_and_the_dry_run_warning_too():
    message = slurm_site.site_error(["a.slurm_account: still the placeholder 'your_x'"], "p/config.yaml")
    assert message.startswith("site values of the Slurm profile (p/config.yaml) are not set; nothing was "
                              "submitted:\n  a.slurm_account: still the placeholder 'your_x'\nEdit these keys "
                              "in p/config.yaml: your account")
    assert "(your Slurm profile)" in slurm_site.site_error(["x"], None)
    assert slurm_site.site_warning("k: still the placeholder 'your_a'", "p/config.yaml") == (
        "Slurm profile (p/config.yaml) k: still the placeholder 'your_a': a run through Slurm stops before "
        "submitting anything until it is set.")


@pytest.mark.parametrize("argv, environ, name", [
    (["snakemake", "--profile", "slurm", "-n"], {}, "slurm"),
    (["snakemake", "--profile=profiles/slurm"], {"SNAKEMAKE_PROFILE": "env"}, "profiles/slurm"),
    (["snakemake", "--profile=a", "--profile", "b"], {}, "b"),
    (["snakemake", "--profile", "a", "--profile=b"], {}, "b"),
    (["snakemake", "-n"], {"SNAKEMAKE_PROFILE": "env"}, "env"),
    (["snakemake", "--profile"], {}, None),
    (["snakemake"], {}, None),
])
def test_profile_name_is_the_last_on_the_command_line_else_the_environment(argv, environ, name):
    assert slurm_site.profile_name(argv, environ) == name


# ---- Snakemake internals, on the installed Snakemake's classes -------------------------------

def test_profile_resources_read_what_the_profile_wrote():
    from snakemake.cli import parse_set_resources
    from snakemake.resources import Resources
    from snakemake.settings.types import ResourceSettings

    default = Resources.parser_factory(defaults="full", allow_expressions=True)(
        ["slurm_account='your_account'", "slurm_partition=\"cpu\"", "mem_mb=4000"])
    overwrite = parse_set_resources(["train:slurm_partition='gpu'", "train:mem_mb=12000 * attempt"])
    workflow = SimpleNamespace(resource_settings=ResourceSettings(default_resources=default,
                                                                  overwrite_resources=overwrite))
    values = internals.profile_resources(workflow)
    assert {key: values[key] for key in PROFILE_VALUES} == PROFILE_VALUES
    assert slurm_site.site_values(values)["default-resources.slurm_account"] == "your_account"
    without = SimpleNamespace(resource_settings=ResourceSettings())
    assert internals.profile_resources(without) == {}


def test_workflow_still_has_the_attributes_the_internals_read(tmp_path, monkeypatch):
    """A real Workflow: the command-line config files and the executor plugin."""
    import snakemake.api  # noqa: F401  (imports snakemake.workflow without an import cycle)
    from snakemake.settings.types import ConfigSettings, ResourceSettings, StorageSettings, WorkflowSettings
    from snakemake.workflow import Workflow
    from snakemake_interface_executor_plugins.registry import ExecutorPluginRegistry

    monkeypatch.chdir(tmp_path)
    Path("study.yaml").write_text("datasets: {}\n")
    Path("mine.yaml").write_text("seeds: [1]\n")

    def workflow_with(**config_settings):
        workflow = Workflow(config_settings=ConfigSettings(configfiles=[Path("mine.yaml")], **config_settings),
                            resource_settings=ResourceSettings(cores=2), workflow_settings=WorkflowSettings(),
                            storage_settings=StorageSettings(), logger_manager=None)
        workflow.configfile("study.yaml")  # the Snakefile's `configfile:`
        return workflow

    workflow = workflow_with(config={"training": {"epochs": "1"}})
    assert internals.config_files(workflow) == ["study.yaml", str(tmp_path / "mine.yaml")]
    assert internals.command_line_config(workflow) == {"training": {"epochs": "1"}}
    assert workflow.config == {"datasets": {}, "seeds": [1], "training": {"epochs": "1"}}
    replaced = workflow_with(replace_workflow_config=True)
    assert internals.config_files(replaced) == [str(tmp_path / "mine.yaml")] and replaced.config == {"seeds": [1]}
    assert internals.executor_name(workflow) is None  # not chosen while the Snakefile is parsed
    assert {f.name for f in dataclasses.fields(Workflow)} >= {"resource_settings", "config_settings"}
    slurm = ExecutorPluginRegistry().get_plugin(slurm_site.SLURM_EXECUTOR)
    assert internals.executor_name(SimpleNamespace(executor_plugin=slurm)) == "slurm"


def test_profile_file_is_found_like_snakemake_finds_it(tmp_path, monkeypatch):
    profile = tmp_path / "profiles" / "slurm"
    profile.mkdir(parents=True)
    (profile / "config.yaml").write_text("executor: slurm\n")
    monkeypatch.chdir(tmp_path)
    argv = ["snakemake", "--profile", "profiles/slurm"]
    assert internals.profile_file(argv, {}) == "profiles/slurm/config.yaml"
    # --directory moved the working directory: the shell's $PWD still finds it.
    elsewhere = tmp_path / "work"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert internals.profile_file(argv, {"PWD": str(tmp_path)}) == "profiles/slurm/config.yaml"
    assert internals.profile_file(["snakemake", "--profile", "absent-xyz"], {}) == "profile absent-xyz"
    assert internals.profile_file(["snakemake"], {}) is None


def test_packing_reads_the_train_rules_site_values_with_defaults():
    assert slurm_site.packing({}) == {"runs_per_job": 1, "runs_at_once": 1, "run_minutes": 30, "max_runtime": None}
    written = {"set-resources.train.runs_per_job": 16, "set-resources.train.run_minutes": "'7.5'",
               "set-resources.train.max_runtime": "2880", "set-resources.train.gpu": 1,
               "set-resources.train.runs_at_once": "4"}
    assert slurm_site.packing(written) == {"runs_per_job": 16, "runs_at_once": 4, "run_minutes": 7.5,
                                           "max_runtime": 2880}


@pytest.mark.parametrize(("name", "value", "expected"), [
    ("runs_per_job", 0, "an integer from 1 to 64"), ("runs_per_job", 65, "an integer from 1 to 64"),
    ("runs_per_job", "2.5", "an integer from 1 to 64"), ("runs_at_once", 0, "an integer from 1 to 64"),
    ("run_minutes", "soon", "a positive number of minutes"),
    ("max_runtime", "2-00:00:00", "a positive integer (minutes)")])
def test_packing_names_a_wrong_value_and_its_key(name, value, expected):
    with pytest.raises(ValueError, match=rf"set-resources\.train\.{name}: .* is not {re.escape(expected)}"):
        slurm_site.packing({f"set-resources.train.{name}": value})
