"""An HPC user's first day without a cluster: the Makefile's front door, the Slurm profile
found by name, the user's own config, site values checked up front, the supported Snakemake
range and reuse as a module. The cluster itself: tests/slurm/test_slurm.py."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml
from conftest import PROJECT, copy_dataset, write_config

BIN = Path(sys.executable).parent
SHIPPED_PROFILE = PROJECT / "profiles" / "slurm"


# The demo study, as `make demo` passes it.
DEMO = ("--configfile", "config/demo.yaml", "--replace-workflow-config")


def run(command: list[str], cwd: Path, timeout: int = 300, **env: str) -> subprocess.CompletedProcess:
    """``command`` with this interpreter's tools first on PATH; ``PWD`` follows ``cwd``
    like a shell's would."""
    # Without make's own variables: under `make test` a nested make would print
    # "Entering directory" lines.
    inherited = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MAKELEVEL", "MFLAGS")}
    environment = {**inherited, "PATH": f"{BIN}:{os.environ['PATH']}", "PWD": str(cwd), **env}
    return subprocess.run(command, cwd=cwd, env=environment, capture_output=True, text=True,
                          timeout=timeout)


def train_jobs(output: str) -> int:
    table = output.split("Job stats:")[1].split("total")[0]
    return int(re.search(r"^train\s+(\d+)$", table, re.M)[1])


# --- point 8: the front door --------------------------------------------------------

@pytest.mark.parametrize("python, reported",
                         [("fake", "is Python 3.10"), ("python3.99-absent", "was not found")])
def test_make_stops_before_the_venv_when_python_is_not_3_11(tmp_path, python, reported):
    """Fails if the Makefile's version check goes (pip would fail minutes later instead)."""
    if python == "fake":  # a python3 that says it is 3.10, as an old module would
        python = tmp_path / "python3"
        python.write_text("#!/bin/sh\necho 3.10\n")
        python.chmod(0o755)
    venv = tmp_path / "venv"
    result = run(["make", f"PYTHON={python}", f"VENV={venv}", "demo"], PROJECT,
                 XDG_CONFIG_HOME=str(tmp_path / "config"))
    assert result.returncode != 0
    assert f"'{python}' {reported}; this project needs Python 3.11" in result.stderr
    assert "make PYTHON=python3.11" in result.stderr and "module load python/3.11" in result.stderr
    assert not venv.exists()


# --- point 1: `snakemake --profile slurm` -------------------------------------------

def test_make_profile_links_the_slurm_profile_so_that_the_bare_name_works(tmp_path):
    """Fails if `make profile` links nothing or elsewhere, or if the profile's file is not
    one that Snakemake reads (profile.yaml instead of config.yaml)."""
    config_home = tmp_path / "config"
    first = run(["make", "profile"], PROJECT, XDG_CONFIG_HOME=str(config_home))
    link = config_home / "snakemake" / "slurm"
    assert first.returncode == 0 and link.is_symlink(), first.stderr
    assert link.resolve() == SHIPPED_PROFILE.resolve()
    again = run(["make", "profile"], PROJECT, XDG_CONFIG_HOME=str(config_home))
    assert again.returncode == 0 and again.stdout == again.stderr == ""

    # Snakemake's own lookup of the bare name, from the repository root, dry run.
    dry = run([sys.executable, "-m", "snakemake", "-n", "--profile", "slurm", *DEMO], PROJECT,
              XDG_CONFIG_HOME=str(config_home))
    assert dry.returncode == 0, dry.stderr[-3000:]
    output = dry.stdout + dry.stderr
    assert "Using profile slurm for setting default command line arguments" in output
    assert f"Slurm profile ({link}/config.yaml) default-resources.slurm_account" in output  # this one


def test_make_profile_uses_home_config_and_never_replaces_another_profile(tmp_path):
    """$HOME/.config without XDG_CONFIG_HOME; an existing other profile stays untouched
    (fails if the link step overwrites it or stays silent about it)."""
    env = {key: value for key, value in os.environ.items() if key != "XDG_CONFIG_HOME"}
    link = tmp_path / ".config" / "snakemake" / "slurm"
    link.mkdir(parents=True)
    (link / "config.yaml").write_text("executor: slurm\njobs: 3\n")
    result = subprocess.run(["make", "profile"], cwd=PROJECT, capture_output=True, text=True,
                            env={**env, "HOME": str(tmp_path)}, timeout=60)
    assert result.returncode == 0  # make demo / make test go on
    assert f"{link} exists and is not this checkout's profile; left as it is" in result.stderr
    assert f"snakemake --profile {SHIPPED_PROFILE}" in result.stderr
    assert (link / "config.yaml").read_text() == "executor: slurm\njobs: 3\n" and not link.is_symlink()

    shutil.rmtree(link)
    link.symlink_to(tmp_path / "gone")  # a dangling link holds no profile: replaced
    result = subprocess.run(["make", "profile"], cwd=PROJECT, capture_output=True, text=True,
                            env={**env, "HOME": str(tmp_path)}, timeout=60)
    assert result.returncode == 0 and link.resolve() == SHIPPED_PROFILE.resolve()


# --- point 2: right-sized training jobs (the sbatch line itself: tests/slurm/test_slurm.py) -----

def test_shipped_profile_gives_train_jobs_eight_cpus_one_gpu_and_eight_threads():
    """Fails if default-resources' cpus_per_task: 1 reaches train again (the plugin then
    submits --cpus-per-task=1) or if set-threads and the CPU request disagree."""
    result = run([sys.executable, "-m", "snakemake", "-n", "--forceall", "--profile", "profiles/slurm", *DEMO],
                 PROJECT)
    assert result.returncode == 0, result.stderr[-3000:]
    jobs = re.findall(r"^rule train:.*?^    resources: (.*?)$", result.stdout, re.S | re.M)
    assert len(jobs) == 10  # the demo's 10 configurations × 3 seeds: a configuration's seeds share a job
    for job in jobs:
        resources = dict(item.split("=", 1) for item in job.split(", "))
        assert resources["cpus_per_task"] == "8" and resources["gpu"] == "1"
        assert "cpus_per_gpu" not in resources
    # A dry run caps threads at its own cores, so the thread count is read from the profile.
    profile = yaml.safe_load((SHIPPED_PROFILE / "config.yaml").read_text())
    assert profile["set-threads"]["train"] == profile["set-resources"]["train"]["cpus_per_task"] == 8


# --- the login node stays light: whole-dataset and study-wide steps as cluster jobs ---------

def fake_slurm_tools(folder: Path) -> Path:
    """sbatch that records its arguments and refuses the job (after accepting the
    pre-flight's --test-only, as Slurm answers it); sacctmgr that knows the profile's
    account; sinfo and the status commands fail (no cluster here)."""
    folder.mkdir()
    (folder / "sbatch").write_text('#!/bin/sh\necho "$*" >> "$FAKE_SBATCH_LOG"\n'
                                   'if [ "$1" = --test-only ]; then\n'
                                   '  echo "sbatch: Job 1 to start at 2026-01-01T00:00:00 using 1 processors" >&2\n'
                                   '  exit 0\nfi\n'
                                   'echo "sbatch: error: no cluster here" >&2\nexit 1\n')
    (folder / "sacctmgr").write_text("#!/bin/sh\necho test_account\n")
    for tool in ("sinfo", "squeue", "sacct", "scontrol"):
        (folder / tool).write_text("#!/bin/sh\nexit 1\n")
    for tool in folder.iterdir():
        tool.chmod(0o755)
    return folder


@pytest.mark.parametrize("sized", [True, False])
def test_slurm_profile_submits_the_rules_it_sizes_and_keeps_the_others_on_the_login_node(tmp_path, sized):
    """The shipped profile (account filled in) sizes verify: a Slurm run submits it with
    those resources. The same profile without verify's set-resources runs it on the
    login node and submits nothing. Fails if verify is a login-node rule whatever the
    profile says, or a cluster job without resources."""
    profile = yaml.safe_load((SHIPPED_PROFILE / "config.yaml").read_text())
    profile["default-resources"]["slurm_account"] = "test_account"
    if not sized:
        del profile["set-resources"]["verify"]
    (tmp_path / "profile").mkdir()
    (tmp_path / "profile" / "config.yaml").write_text(yaml.safe_dump(profile))
    data = copy_dataset(tmp_path / "data", {"train": 2, "test": 1})
    config = write_config(tmp_path / "c.yaml", data, models=["scratch_cnn"], strategies=["scratch"])
    tools = fake_slurm_tools(tmp_path / "tools")
    submitted = tmp_path / "sbatch.log"
    result = run([sys.executable, "-m", "snakemake", "--profile", str(tmp_path / "profile"),
                  "-s", str(PROJECT / "workflow/Snakefile"), "--directory", str(tmp_path), "--configfile",
                  str(config), "--retries", "0", "results/tiny/data/verify.json"], tmp_path,
                  PATH=f"{tools}:{BIN}:{os.environ['PATH']}", FAKE_SBATCH_LOG=str(submitted))
    output = result.stdout + result.stderr
    if sized:
        assert result.returncode == 1 and "SLURM sbatch failed" in output, output[-3000:]
        test_only, call = submitted.read_text().splitlines()  # the pre-flight's, then the submission
        assert test_only.startswith("--test-only") and "--mem 2000" in test_only
        assert "--comment rule_verify_wildcards_tiny" in call and "--mem 2000" in call
        assert "-p cpu" in call and "--cpus-per-task=1" in call and "localrule verify" not in output
    else:
        assert result.returncode == 0, output[-3000:]
        assert "localrule verify:" in output and not submitted.exists()
        assert (tmp_path / "results/tiny/data/verify.json").is_file()


def test_slurm_profile_sizes_every_heavy_login_node_rule():
    """Every rule that reads all of a dataset's images or all runs is a cluster job on
    the shipped profile, with memory and time of its own; the downloads, plan and split
    stay on the login node (fails if an entry is dropped or one of those is added)."""
    from scripts.site import slurm_site

    resources = yaml.safe_load((SHIPPED_PROFILE / "config.yaml").read_text())["set-resources"]
    sized = {name for name, values in resources.items() if {"mem_mb", "runtime"} <= set(values)}
    assert set(slurm_site.MOVABLE_RULES) <= sized
    assert not {"download_dataset", "fetch_weights", "plan", "split"} & set(resources)


# --- point 3: the user's own config ---------------------------------------------------

@pytest.fixture(scope="module")
def own_data(tmp_path_factory):
    return copy_dataset(tmp_path_factory.mktemp("own") / "data", {"train": 2, "test": 1})


def dry_run_in_project(*args: str, returncode: int = 0) -> str:
    """A dry run from the repository root, where the Snakefile's configfile
    (config/config.yaml, the shipped study of the bundled data) is found: the situation of
    a user following the README."""
    result = run([sys.executable, "-m", "snakemake", "-n", "--forceall", *args], PROJECT)
    assert result.returncode == returncode, result.stderr[-3000:]
    return result.stdout + result.stderr


def test_own_configfile_runs_exactly_its_datasets(own_data, tmp_path):
    """3 train jobs (scratch_cnn x scratch, vgg16 x scratch/partial) on `tiny` only;
    without --replace-workflow-config the shipped study's dataset would join it: a stop."""
    mine = write_config(tmp_path / "mine.yaml", own_data, seeds=[1])
    mixed = dry_run_in_project("--configfile", str(mine), returncode=1)
    assert "datasets: ['demo'] from config/config.yaml would run beside ['tiny']" in mixed
    output = dry_run_in_project("--configfile", str(mine), "--replace-workflow-config")
    assert train_jobs(output) == 3
    assert "results/tiny/packs/" in output and "results/demo/" not in output


def test_configfiles_merge_in_order_and_config_overrides_apply(own_data, tmp_path):
    """A settings-only file after the demo's changes what it names: the scratch CNN, VGG16
    from scratch, and VGG16's 4 pretrained strategies x 2 weights sources = 10 runs x 1
    seed. --config on top of the user's file: 3 runs x 2 seeds = 6."""
    settings = tmp_path / "settings.yaml"
    settings.write_text(yaml.safe_dump({"seeds": [1]}))
    output = dry_run_in_project("--configfile", "config/demo.yaml", str(settings))  # one flag, files in order
    assert train_jobs(output) == 10 and "results/demo/" in output

    mine = write_config(tmp_path / "mine.yaml", own_data, seeds=[1])
    output = dry_run_in_project("--configfile", str(mine), "--replace-workflow-config", "--config", "seeds=[1,2]")
    assert train_jobs(output) == 6 and "results/demo/" not in output


def train_settings(output: str) -> dict[str, dict]:
    """The training settings of each train job of a dry run's `-p` output, by model."""
    commands = re.findall(r"^Shell command: .*?(python -m scripts train-pack .*)$", output, re.M)
    return {re.search(r"--model (\S+)", command)[1]:
            json.loads(re.search(r"--settings '(.*?)'", command)[1])["training"] for command in commands}


def test_own_configfile_with_datasets_takes_schema_defaults_not_the_demo_settings(own_data, tmp_path):
    """A mine.yaml with its own datasets and `training: {image_size: 32}`, from the
    repository root. The demo trains 2 epochs without early stopping; the schema
    (config/README.md) says 20 epochs, patience 5. Fails when the demo's training settings
    reach the user's study."""
    mine = tmp_path / "mine.yaml"
    mine.write_text(yaml.safe_dump({
        "datasets": {"tiny": {"path": str(own_data), "manifest": f"{own_data}.sha256"}},
        "models": ["scratch_cnn"], "strategies": ["scratch"], "seeds": [1], "training": {"image_size": 32}}))
    output = dry_run_in_project("-p", "--configfile", str(mine), "--replace-workflow-config")
    assert f"study settings from {mine}" in output
    training = train_settings(output)["scratch_cnn"]
    assert (training["epochs"], training["early_stopping_patience"], training["image_size"]) == (20, 5, 32)
    assert (training["learning_rate"], training["warmup_epochs"]) == (1e-4, 3)

    # The plan records the file and the keys it set (written in a folder of its own).
    result = run([sys.executable, "-m", "snakemake", "-s", str(PROJECT / "workflow/Snakefile"), "--directory",
                  str(tmp_path), "--configfile", str(mine), "--cores", "1", "results/plan.json"], tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    plan = json.loads((tmp_path / "results/plan.json").read_text())
    assert plan["settings"] == {"files": [str(mine)], "user_set": [
        "datasets.tiny.manifest", "datasets.tiny.path", "models", "seeds", "strategies", "training.image_size"]}
    assert plan["config"]["training"]["epochs"] == 20 and plan["config"]["weights"] == "imagenet"


def test_a_study_without_datasets_stops_naming_the_key_and_the_demo(tmp_path):
    """A settings-only file alone (config/config.yaml dropped): nothing to train."""
    settings = tmp_path / "settings.yaml"
    settings.write_text(yaml.safe_dump({"seeds": [1], "training": {"image_size": 32}}))
    output = dry_run_in_project("--configfile", str(settings), "--replace-workflow-config", returncode=1)
    assert "the study names no dataset under datasets" in output and "config/demo.yaml" in output


# --- point 5: site values checked before anything is submitted --------------------------

def without_slurm_path(tmp_path: Path) -> str:
    """PATH with this interpreter's tools and `which`, but no sbatch/sinfo/squeue."""
    tools = tmp_path / "tools"
    tools.mkdir()
    (tools / "which").symlink_to(shutil.which("which"))
    return f"{BIN}:{tools}"


def test_placeholder_account_is_a_warning_in_a_dry_run(tmp_path):
    result = run([sys.executable, "-m", "snakemake", "-n", "--profile", "profiles/slurm", *DEMO], PROJECT,
                 PATH=without_slurm_path(tmp_path))
    assert result.returncode == 0, result.stderr[-3000:]
    assert ("Slurm profile (profiles/slurm/config.yaml) default-resources.slurm_account: still the "
            "placeholder 'your_account'") in result.stdout + result.stderr


def test_placeholder_account_stops_a_slurm_run_before_any_job(tmp_path):
    """Not a dry run: the check must stop it before the login-node rules (verify) run and
    before anything is submitted; fails if the check is removed or only warns."""
    data = copy_dataset(tmp_path / "data", {"train": 2, "test": 1})
    config = write_config(tmp_path / "c.yaml", data, models=["scratch_cnn"], strategies=["scratch"])
    result = run([sys.executable, "-m", "snakemake", "--profile",
                  str(SHIPPED_PROFILE), "-s", str(PROJECT / "workflow/Snakefile"), "--directory",
                  str(tmp_path), "--configfile", str(config)], tmp_path, PATH=without_slurm_path(tmp_path))
    output = result.stdout + result.stderr
    assert result.returncode == 1, output[-3000:]
    assert f"site values of the Slurm profile ({SHIPPED_PROFILE}/config.yaml) are not set" in output
    assert "default-resources.slurm_account: still the placeholder 'your_account'" in output
    assert "on a cluster without accounts delete the slurm_account line" in output
    assert "localrule verify" not in output and not (tmp_path / "results").exists()


# --- point 4: the supported Snakemake range --------------------------------------------

def test_min_version_is_the_one_the_readme_states_and_is_met():
    """README and Snakefile name the same lowest version; this environment satisfies it."""
    from packaging.version import Version
    from snakemake import __version__

    declared = re.search(r'min_version\("([\d.]+)"\)', (PROJECT / "workflow/Snakefile").read_text())[1]
    readme = (PROJECT / "README.md").read_text()
    assert f"Snakemake ≥ {declared}, < 10" in readme
    assert Version(declared) <= Version(__version__) < Version("10")


@pytest.mark.skipif(not os.environ.get("CXR_SNAKEMAKE_MIN"),
                    reason="set CXR_SNAKEMAKE_MIN to the snakemake executable of a venv with the lowest "
                           "supported version (see README, Requirements)")
def test_lowest_supported_snakemake_dry_runs_the_workflow_and_the_slurm_profile():
    oldest = os.environ["CXR_SNAKEMAKE_MIN"]
    version = run([oldest, "--version"], PROJECT).stdout.strip()
    declared = re.search(r'min_version\("([\d.]+)"\)', (PROJECT / "workflow/Snakefile").read_text())[1]
    assert version.startswith(declared), (version, declared)
    for args in ([], ["--profile", "profiles/slurm"]):
        result = run([oldest, "-n", "--forceall", "--configfile", "config/demo.yaml", *args], PROJECT)
        assert result.returncode == 0, result.stderr[-3000:]
        assert train_jobs(result.stdout + result.stderr) == 32


# --- point 7: reuse as a module -----------------------------------------------------

def test_another_workflow_imports_this_one_as_a_module_and_runs_it(tmp_path):
    """A workflow elsewhere: `module cxr: snakefile: <path>`, `config: config`, `use rule *
    from cxr`; 1 model, 1 seed, 1 epoch, 32 px. Fails with "No module named 'scripts'" when
    the project is located through workflow.basedir (the importing workflow's folder)."""
    data = copy_dataset(tmp_path / "data", {"train": 8, "test": 3})
    write_config(tmp_path / "config.yaml", data, models=["scratch_cnn"], strategies=["scratch"],
                 seeds=[1], training={"image_size": 32, "batch_size": 8, "epochs": 1})
    (tmp_path / "Snakefile").write_text(
        'configfile: "config.yaml"\n\n\n'
        f'module cxr:\n    snakefile:\n        "{PROJECT}/workflow/Snakefile"\n'
        "    config:\n        config\n\n\n"
        "use rule * from cxr\n")
    result = run([sys.executable, "-m", "snakemake", "--cores", "2"],
                 tmp_path, timeout=600)
    assert result.returncode == 0, result.stderr[-4000:]
    runs = pd.read_csv(tmp_path / "results/runs.csv")
    assert list(zip(runs["model"], runs["seed"], runs["status"], strict=True)) == [("scratch_cnn", 1, "ok")]
    assert (tmp_path / "results/report.html").is_file()
    assert not (PROJECT / "results/tiny").exists()  # it ran in the importing workflow's folder
