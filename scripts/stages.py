"""One function per workflow step: read the step's inputs, call the concern modules,
write the step's outputs atomically. The Snakemake rules call these through
``python -m scripts <step>``, whose options are these functions' parameters (a path,
text, a number, or JSON for a ``dict`` or ``list``); tests call them directly.
"""

from __future__ import annotations

import os
import platform
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from scripts.common import fsutil
from scripts.common.layout import FINISHED_RUN, RUN_FILES, TABLES
from scripts.data import manifest as manifests
from scripts.data.manifest import DataError
from scripts.plan.grid import is_current

THUMBNAIL_SIZE = 160  # px, the report's Grad-CAM panels


def verify(dataset: str, root: str, manifest: str, leakage: str, positive_class: str | None, index: str,
           report: str, groups: dict | None = None) -> dict:
    """Check a dataset against its manifest: hashes, class layout, duplicates, leakage.

    Writes the image ``index``, with each image's group (patient) from ``groups``
    (``datasets.<dataset>.groups``; empty without: :func:`scripts.data.splits.image_groups`),
    and the ``report``. An empty ``positive_class`` is none."""
    from scripts.data.splits import image_groups
    from scripts.plan.config import positive_class_problems

    positive_class = positive_class or None
    records = manifests.verify_dataset(root, manifest)
    classes = manifests.check_classes(records)
    problems = positive_class_problems(dataset, classes, positive_class)
    if problems:
        raise DataError("\n".join(problems))
    duplicates = manifests.find_duplicates(records)
    leaks = [group for group in duplicates if group["cross_split"]]
    if leaks and leakage == "fail":
        listing = "\n".join(f"  - {' = '.join(g['paths'])}" for g in leaks)
        raise DataError(
            f"{len(leaks)} image(s) are byte-identical across splits of {root} (leakage):\n"
            f"{listing}\nRemove them, or set leakage: warn (report only) or drop "
            "(exclude the val/test copies)."
        )
    for group in leaks:
        print(f"WARNING leakage: {' = '.join(group['paths'])}")
    checked = {
        "dataset": dataset,
        "root": str(root),
        "manifest": str(manifest),
        "manifest_sha256": fsutil.file_digest(manifest),
        "n_images": len(records),
        "classes": classes,
        "positive_class": positive_class,
        "counts": manifests.class_counts(records),
        "duplicates": duplicates,
        "leakage_policy": leakage,
        "verified": "passed",
    }
    images = pd.DataFrame([vars(r) for r in records])
    images["group"] = image_groups(dataset, list(images["path"]), groups or {})
    checked["groups"] = _group_counts(images, groups or {})
    fsutil.write_csv(index, images)
    fsutil.write_json(report, checked)
    return checked


def _group_counts(index: pd.DataFrame, groups: dict) -> dict | None:
    """How groups were declared and how many each split has; None without groups."""
    if not groups:
        return None
    return {**groups, "per_split": {split: int(n) for split, n in index.groupby("split")["group"].nunique().items()}}


def prepare(root: str, index: str, image_size: int, images: str, conversions: str, colour: dict) -> None:
    """Decode every indexed image once into a ``uint8`` array (index order).

    ``colour``: the config's ``data.colour_overlays`` (policy, tolerance, min_share)."""
    from scripts.data.images import colour_summary, load_images

    table = fsutil.read_table(index)
    array, done = load_images(root, table["path"].tolist(), image_size, colour_policy=colour["policy"],
                              colour_tolerance=colour["tolerance"], colour_min_share=colour["min_share"])
    labels = dict(zip(table["path"], table["label"], strict=True))
    done["colour"]["summary"] = colour_summary(done["colour"]["overlaid"], labels)
    with fsutil.atomic_path(images) as tmp, open(tmp, "wb") as handle:
        np.save(handle, array)
    fsutil.write_json(conversions, {"image_size": image_size, **done})


def thumbnails(root: str, index: str, output: str, size: int = THUMBNAIL_SIZE) -> None:
    """The test images at display size (RGB uint8) with their paths, for the report."""
    from scripts.data.images import load_image

    table = fsutil.read_table(index)
    paths = table.loc[table["split"] == "test", "path"].tolist()
    images = np.stack([load_image(Path(root) / path, size)[0] for path in paths])
    with fsutil.atomic_path(output) as tmp, open(tmp, "wb") as handle:
        np.savez_compressed(handle, images=images, paths=np.asarray(paths, dtype=str))


def leakage(root: str, index: str, policy: str, output: str, copies: str) -> None:
    """Test images that are copies of training or validation images.

    Per test image the most similar image of the training pool (train and val) and
    whether it is a copy: byte-identical or re-encoded (a near-duplicate), and where the
    index has groups, the groups (patients) with images in both. ``policy`` is
    ``data.leakage``: ``fail`` names every copy and every such patient and writes
    nothing; ``drop`` leaves both out of every seed's test set (:func:`split`); ``warn``
    keeps them, and the report qualifies the claims. ``copies``: the near-copy pairs within
    the training pool and within the test set (:func:`scripts.data.manifest.copies_within`),
    which the split keeps on one side and the test bootstrap resamples as one unit."""
    images = fsutil.read_table(index)
    prints = _fingerprints(root, list(images["path"]))
    table = manifests.leakage_table(images, prints)
    leaked, shared = manifests.copies_of(table), manifests.groups_in_training(table)
    if (len(leaked) or len(shared)) and policy == "fail":
        raise manifests.leakage_error(root, leaked, shared)
    for row in leaked.itertuples():
        print(f"WARNING leakage: {row.path} ≈ {row.most_similar} (r = {row.correlation:.2f})")
    print(f"{len(leaked)} of {len(table)} test images are copies of training or validation images "
          f"({int(leaked['identical'].sum())} byte-identical)")
    for row in shared.itertuples():
        print(f"WARNING patient in training and test: group {row.group} ({row.n_test} test image(s): {row.paths})")
    if table["group"].ne("").any():
        print(f"{len(shared)} of {table['group'].nunique()} test groups (patients) also have training or "
              "validation images")
    within = manifests.copies_within(images, prints)
    for row in within.itertuples():
        print(f"near-copies within the {row.within}: {row.path} ≈ {row.copy_of} (r = {row.correlation:.2f})")
    fsutil.write_csv(copies, within)
    fsutil.write_csv(output, table)


def split(index: str, leakage_table: str, copies: str, seed: int, settings: dict, output: str) -> None:
    """The seed's stratified validation split and training ranks.

    :func:`scripts.data.splits.make_split`; ``leakage_table``: the :func:`leakage`
    table, whose near-duplicates and images of patients with training images
    ``leakage: drop`` leaves out; ``copies``: its near-copy pairs within the training pool
    and within the test set, each kept on one side of the split."""
    from scripts.data.splits import make_split

    checked = fsutil.read_table(leakage_table)
    flagged = checked["near_duplicate"].eq(True)
    if "group_in_training" in checked:
        flagged |= checked["group_in_training"].eq(True)
    pairs = fsutil.read_table(copies)
    table, note = make_split(fsutil.read_table(index), seed, settings, frozenset(checked.loc[flagged, "path"]),
                             list(zip(pairs["path"], pairs["copy_of"], strict=True)))
    print(note)
    fsutil.write_csv(output, table)


def _fingerprints(root: str, paths: list[str]) -> np.ndarray:
    """The near-duplicate fingerprints of the images at ``paths`` under ``root``."""
    from scripts.data import external
    from scripts.data.images import load_image

    images = [load_image(Path(root) / path, external.FINGERPRINT_SIZE)[0] for path in paths]
    return external.fingerprints(images)


def external_overlap(root: str, index: str, external_root: str, external_index: str, output: str) -> None:
    """External test images that are near-duplicates of a dataset's images.

    Per test image of the external dataset, the most similar image of the trained
    dataset (any split) and whether it is the same radiograph (a near-duplicate)."""
    trained = fsutil.read_table(index)
    tests = fsutil.read_table(external_index)
    tests = tests[tests["split"] == "test"]
    table = manifests.most_similar(tests, _fingerprints(external_root, list(tests["path"])),
                                   trained, _fingerprints(root, list(trained["path"])))
    print(f"{int(table['near_duplicate'].sum())} of {len(table)} external test images are near-duplicates "
          f"of images of {root}")
    fsutil.write_csv(output, table)


def _check_names(paths: dict[str, str], expected: dict, what: str) -> None:
    """A step's file mapping names exactly the files of its layout entry."""
    if set(paths) != set(expected):
        raise ValueError(f"{what}: expected the names {sorted(expected)}, got {sorted(paths)}")


@dataclass(frozen=True)
class RunIdentity:
    dataset: str
    model: str
    strategy: str
    weights: str
    fraction: float
    seed: int


def train(dataset: str, model: str, strategy: str, weights_name: str, fraction: float, seed: int, images: str,
          split: str, settings: dict, outputs: dict, checkpoint: str, feature_cache: str, threads: int | None = None,
          external_tests: list | None = None) -> None:
    """Train one run, then evaluate it with Grad-CAM.

    :func:`scripts.train.training.run`, then the run's files. ``settings``: the run's
    ``training``, ``weights``, ``positive_class`` and ``gradcam``; ``outputs``: a path per
    name of :data:`scripts.common.layout.RUN_FILES`; ``threads``: CPU threads granted (the
    allocation may lower it); ``external_tests``: per external dataset its ``dataset``
    name, ``class_map``, and the paths of its decoded ``images`` and its ``index``."""
    _check_names(outputs, RUN_FILES, "outputs")
    from scripts.train import training

    run = RunIdentity(dataset, model, strategy, weights_name, fraction, seed)
    external_tests = external_tests or []
    started = time.perf_counter()
    inputs = _run_inputs(images, split, external_tests)
    _write_run(training.run(run, inputs, settings, checkpoint, feature_cache, threads), outputs)
    _write_finished(run, images, split, settings, external_tests, outputs, started)


def _run_inputs(images: str, split_path: str, external_tests, loaded: dict | None = None):
    """A run's :class:`scripts.train.training.RunInputs`; ``loaded``: the images and external
    tests another run of the same job already opened (a pack reads them once)."""
    from scripts.train import training

    if loaded is None:
        loaded = {"images": np.load(images, mmap_mode="r"),
                  "external_tests": [{**test, "images": np.load(test["images"], mmap_mode="r"),
                                      "index": fsutil.read_table(test["index"])}
                                     for test in external_tests]}
    return training.RunInputs(images=loaded["images"], split=fsutil.read_table(split_path),
                              images_path=images, split_path=split_path, external_tests=loaded["external_tests"])


def _write_run(trained, outputs: dict[str, str]) -> None:
    from scripts.train import training

    results = trained.results
    fsutil.write_csv(outputs["predictions"], results["predictions"])
    fsutil.write_csv(outputs["val_predictions"], results["val_predictions"])
    with fsutil.atomic_path(outputs["gradcam"]) as tmp, open(tmp, "wb") as handle:
        np.savez_compressed(handle, **results["gradcam"])
    fsutil.write_json(outputs["metrics"], results["metrics"])
    fsutil.write_csv(outputs["external"], results["external"])
    training.save_model_weights(trained.model, outputs["model"])
    fsutil.write_csv(outputs["history"], results["history"])
    fsutil.write_json(outputs["info"], results["info"])
    trained.checkpoint.clear()  # last: a job killed before every file is written resumes from it


@dataclass(frozen=True)
class PackMember:
    """One run of a pack: its seed, split file, checkpoint folder, log file and a path
    per name of :data:`scripts.common.layout.RUN_FILES`."""

    seed: int
    split: str
    checkpoint: str
    log: str
    outputs: dict


class PackError(RuntimeError):
    """Some runs of a pack failed; the others kept their files. ``failures``: per failed
    run ``{"seed", "error", "retryable"}``."""

    def __init__(self, message: str, failures: list | None = None):
        super().__init__(message)
        self.failures = failures or []


class NotRetriedError(PackError):
    """A retry of a pack whose previous attempt failed in a way no retry can fix."""


# Failures a new attempt can fix: out of memory (the retry asks for more) and I/O (a
# shared filesystem's hiccup). A time-out or an out-of-memory kill ends the process
# before it can record anything, so those are retried too. Every other error repeats
# identically (the device, the data, the settings): its retry would spend its GPU time
# failing again.
RETRYABLE_ERRORS = ("MemoryError", "ResourceExhaustedError", "OSError")


def retryable(error: BaseException) -> bool:
    return any(cls.__name__ in RETRYABLE_ERRORS for cls in type(error).__mro__)


def _failure(seed: int, error: BaseException | str, retry: bool) -> dict:
    text = error if isinstance(error, str) else f"{type(error).__name__}: {error}"
    return {"seed": seed, "error": (text.strip().splitlines() or [""])[0][:500], "retryable": retry}


def _not_retried(failure_record: str, attempt: int) -> str | None:
    """Why attempt ``attempt`` should not train: the previous attempt's record of a
    failure no retry can fix (carried on for the attempt after this one); None for a
    first attempt, which starts afresh."""
    path = Path(failure_record)
    earlier = fsutil.read_json(path) if path.exists() else None
    if attempt > 1 and earlier and earlier.get("attempt") == attempt - 1:
        fsutil.write_json(path, {**earlier, "attempt": attempt})
        return earlier["error"]
    path.unlink(missing_ok=True)
    return None


def train_pack(dataset: str, model: str, strategy: str, weights_name: str, fraction: float, images: str,
               settings: dict, members: list, record: str, feature_cache: str, threads: int | None = None,
               runs_at_once: int = 1, external_tests: list | None = None, attempt: int = 1,
               failure_record: str | None = None) -> None:
    """Train several seeds of one configuration in one job.

    ``members``: per seed its ``seed``, ``split``, ``checkpoint``, ``log`` and
    ``outputs`` (:class:`PackMember`). Each run writes its own files, its :data:`scripts.common.layout.FINISHED_RUN`
    record and its own log, exactly as :func:`train` alone would; a run whose finished
    record matches what it would be trained from is skipped (a pack that runs again
    trains only what failed or is missing). A failed run does not stop the others; the
    step then fails naming it, and ``record`` (the pack's) is written only when all
    finished.

    ``runs_at_once``: processes that train the seeds side by side (the seeds dealt out
    in turn), each with its share of the ``threads`` and of the GPU's memory: several
    small runs share one GPU. A process that dies (killed for memory) fails only its
    own seeds.

    ``attempt`` (Snakemake's, 1 + the retries so far) and ``failure_record``: a job that
    fails in a way no retry can fix (the device, or every failed run's error is one that
    repeats: :data:`RETRYABLE_ERRORS`) writes the record; the retry that follows reads it
    and stops at once, so that Snakemake's retries spend no GPU time repeating it. A
    first attempt (a new ``snakemake``, after the cause was fixed) trains again."""
    from scripts.train.runtime import DeviceError

    if failure_record and (earlier := _not_retried(failure_record, attempt)):
        raise NotRetriedError(f"not retried: attempt {attempt - 1} of this pack failed in a way no retry can fix "
                         f"({earlier}); fix the cause, then run snakemake again (its log: {failure_record})")
    try:
        _train_pack(dataset, model, strategy, weights_name, fraction, images, settings, members, record,
                    feature_cache, threads, runs_at_once, external_tests)
    except DeviceError as error:
        if failure_record:
            fsutil.write_json(failure_record, {"attempt": attempt, "error": f"DeviceError: {str(error)[:500]}"})
        raise
    except PackError as error:
        failures = error.failures
        if failure_record and failures and not any(failure["retryable"] for failure in failures):
            fsutil.write_json(failure_record, {"attempt": attempt, "error": "; ".join(
                f"seed {failure['seed']}: {failure['error']}" for failure in failures), "failures": failures})
        raise


def _train_pack(dataset: str, model: str, strategy: str, weights_name: str, fraction: float, images: str,
                settings: dict, members: list, record: str, feature_cache: str, threads: int | None,
                runs_at_once: int, external_tests: list | None) -> None:
    configuration = {"dataset": dataset, "model": model, "strategy": strategy, "weights": weights_name,
                     "fraction": fraction}
    members = [PackMember(**member) for member in members]
    external_tests = external_tests or []
    for member in members:
        _check_names(member.outputs, RUN_FILES, f"outputs of seed {member.seed}")
    shares = [members[start::runs_at_once] for start in range(min(runs_at_once, len(members)))]
    if len(shares) <= 1:
        done, failed = _train_members(configuration, members, images, settings, feature_cache, threads,
                                      external_tests)
    else:
        done, failed = _train_side_by_side(configuration, shares, images, settings, feature_cache,
                                           max(1, (threads or 1) // len(shares)), external_tests)
    if failed:
        raise PackError(f"pack {configuration}: seeds {sorted(f['seed'] for f in failed)} failed (see their logs); "
                        f"seeds {sorted(d['seed'] for d in done)} finished and keep their files", failed)
    fsutil.write_json(record, {**configuration, "runs": sorted(done, key=lambda entry: entry["seed"])})


def _train_share(connection, configuration: dict, share: list[PackMember], images: str, settings: dict,
                 feature_cache_dir: str, threads: int, external_tests, memory_share: float) -> None:
    """One process of :func:`_train_side_by_side`: trains its seeds and sends back
    ``("done", finished entries, failures)`` or ``("device", message)``."""
    from scripts.train.runtime import GPU_MEMORY_SHARE, DeviceError

    os.environ[GPU_MEMORY_SHARE] = str(memory_share)
    try:
        connection.send(("done", *_train_members(configuration, share, images, settings, feature_cache_dir,
                                                 threads, external_tests)))
    except DeviceError as error:
        connection.send(("device", str(error)))
    connection.close()


def _train_side_by_side(configuration: dict, shares: list[list[PackMember]], images: str, settings: dict,
                        feature_cache_dir: str, threads: int, external_tests) -> tuple[list, list]:
    """Each share's seeds in a process of its own (spawned: a forked TensorFlow is
    unusable), each capped to its share of the GPU's memory. Processes, not a process
    pool: a pool whose worker dies is broken and ends its other workers too, while here a
    process that dies (killed for memory, a crash) fails only the seeds it had not
    finished."""
    import multiprocessing

    from scripts.train.runtime import DeviceError

    context = multiprocessing.get_context("spawn")
    started = []
    for share in shares:
        receiver, sender = context.Pipe(duplex=False)
        process = context.Process(target=_train_share, args=(sender, configuration, share, images, settings,
                                                             feature_cache_dir, threads, external_tests,
                                                             1 / len(shares)))
        process.start()
        sender.close()  # the child's end: the parent's recv then ends when the child does
        started.append((share, receiver, process))
    done, failed, device_errors = [], [], []
    for share, receiver, process in started:
        try:
            answer = receiver.recv()
        except EOFError:
            answer = None
        process.join()
        if answer and answer[0] == "device":
            device_errors.append(answer[1])
            continue
        if answer:
            done += answer[1]
            failed += answer[2]
            continue
        died = f"the process of seeds {[m.seed for m in share]} died (exit code {process.exitcode}"
        died += ", killed by a signal: out of memory?)" if (process.exitcode or 0) < 0 else ")"
        print(died, flush=True)
        share_done = [entry for member in share if (entry := _finished_entry(
            RunIdentity(**configuration, seed=member.seed), images, member, settings, external_tests))]
        finished = {entry["seed"] for entry in share_done}
        done += share_done
        failed += [_failure(member.seed, died, retry=True) for member in share if member.seed not in finished]
    if device_errors:
        raise DeviceError(device_errors[0])
    return done, failed


def _train_members(configuration: dict, members: list[PackMember], images: str, settings: dict,
                   feature_cache_dir: str, threads: int | None, external_tests) -> tuple[list, list]:
    """Train ``members`` one after another in this process: TensorFlow starts, the
    images and external tests load, and the model is built and traced
    (:class:`scripts.train.training.SharedModel`) once. Returns ``(finished entries,
    failures)``, a failure being ``{"seed", "error", "retryable"}``."""
    import contextlib
    import traceback

    from scripts.train import training
    from scripts.train.runtime import DeviceError

    loaded = None
    shared = training.SharedModel()  # built and traced by the first run that trains
    done, failed = [], []
    for member in members:
        run = RunIdentity(**configuration, seed=member.seed)
        if entry := _finished_entry(run, images, member, settings, external_tests):
            print(f"seed {member.seed}: finished earlier, kept")
            done.append(entry)
            continue
        started = time.perf_counter()
        Path(member.log).parent.mkdir(parents=True, exist_ok=True)
        try:
            with open_attempt_log(member.log) as log, contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
                if loaded is None:
                    loaded = {"images": np.load(images, mmap_mode="r"), "external_tests": _run_inputs(
                        images, member.split, external_tests).external_tests}
                else:  # the state of a fresh process: layer names, Keras' global seed generator
                    import keras

                    keras.backend.clear_session()
                inputs = _run_inputs(images, member.split, external_tests, loaded)
                _write_run(training.run(run, inputs, settings, member.checkpoint, feature_cache_dir, threads,
                                        shared), member.outputs)
        except DeviceError:  # the job's device, not this run: no other run can train either
            raise
        except Exception as error:  # any error of one run: the others still train
            print(f"seed {member.seed} failed (log: {member.log}):\n{traceback.format_exc()}", flush=True)
            failed.append(_failure(member.seed, error, retryable(error)))
            continue
        entry = _write_finished(run, images, member.split, settings, external_tests, member.outputs, started)
        done.append({"seed": member.seed, **entry})
        print(f"seed {member.seed}: trained in {entry['wall_seconds']} s (log: {member.log})", flush=True)
    return done, failed


ATTEMPT_HEADER = "== attempt {number} {time} =="


def open_attempt_log(path: str):
    """``path`` opened to append one more attempt, after a header line with the attempt's
    number (1 + the headers already there) and the time: a retried, requeued or rerun job
    keeps the earlier attempts' output, whose traceback says why they failed."""
    import datetime
    import re

    earlier = Path(path).read_text(errors="replace") if Path(path).exists() else ""
    number = len(re.findall(r"^== attempt \d+ ", earlier, flags=re.MULTILINE)) + 1
    log = open(path, "a")  # the caller's with-statement closes it
    log.write(ATTEMPT_HEADER.format(number=number, time=datetime.datetime.now().astimezone().isoformat(
        timespec="seconds")) + "\n")
    log.flush()
    return log


def _finished_entry(run: RunIdentity, images: str, member: PackMember, settings: dict,
                    external_tests) -> dict | None:
    """The run's finished record with its seed, if it finished from what it would be
    trained from now (:func:`scripts.plan.grid.is_current`, and the same split); else None."""
    finished = Path(member.outputs["info"]).parent / FINISHED_RUN
    if not finished.exists():
        return None
    entry = fsutil.read_json(finished)
    identity = entry.get("identity") or {}
    if not (is_current(identity, vars(run), settings, images, external_tests)
            and identity.get("split_sha256") == fsutil.file_digest(member.split)):
        return None
    return {"seed": member.seed, **entry}


def _write_finished(run: RunIdentity, images: str, split_path: str, settings: dict, external_tests,
                    outputs: dict[str, str], started: float) -> dict:
    """The run's :data:`scripts.common.layout.FINISHED_RUN` record, after all its files: what it
    was trained from, its wall time (a pack job's time limit is sized from it), when it
    started (Unix time) and the host and process that trained it."""
    wall = time.perf_counter() - started
    entry = {"identity": _finished_identity(run, images, split_path, settings, external_tests),
             "wall_seconds": round(wall, 3), "started_at": round(time.time() - wall, 3),
             "host": platform.node(), "pid": os.getpid()}
    fsutil.write_json(Path(outputs["info"]).parent / FINISHED_RUN, entry)
    return entry


def _finished_identity(run: RunIdentity, images: str, split_path: str, settings: dict,
                       external_tests) -> dict:
    """What a run is trained from: a run finished from the same is not trained again."""
    return {"run": vars(run), "settings": settings, "images": images,
            "images_bytes": Path(images).stat().st_size, "split_sha256": fsutil.file_digest(split_path),
            "external_tests": list(external_tests)}


def aggregate(plan: str, tables: dict) -> None:
    """Tables, intervals, comparisons and the verdict.

    Every planned run (missing ones flagged), per-configuration summaries, comparisons
    with the baseline, the learning curve, external validation, the pretraining
    comparison and the validation-chosen verdict. ``tables``: a path per name of
    :data:`scripts.common.layout.TABLES`."""
    from scripts.stats import aggregate as agg

    _check_names(tables, TABLES, "tables")
    computed = agg.aggregate(fsutil.read_json(plan))
    for name, path in tables.items():
        fsutil.write_json(path, computed[name]) if path.endswith(".json") else fsutil.write_csv(path, computed[name])


def confirm(plan: str, verdict: str, output: str) -> None:
    """The confirmation stage's prespecified comparison.

    The configuration the aggregate step chose (``verdict``) against the baseline, on the
    fresh confirmation seeds of both (``evaluation.confirmation_seeds``) alone."""
    from scripts.stats.confirmation import confirm as confirmed

    fsutil.write_json(output, confirmed(fsutil.read_json(plan), fsutil.read_json(verdict)))


def report(plan: str, tables: dict, output: str, figures: str | None = None,
           confirmation: str | None = None) -> None:
    """Render the HTML report.

    From the plan and the aggregate stage's ``tables`` (a path per name of
    :data:`scripts.common.layout.TABLES`) and the confirmation stage's result
    (``confirmation``, the confirm step's file); the key figures are also written as PNGs
    to ``figures`` for ``snakemake --report``."""
    from scripts.report import report as rep
    from scripts.report.tables import read_tables
    from scripts.stats.confirmation import with_confirmation

    _check_names(tables, TABLES, "tables")
    read = read_tables(tables)
    read["verdict"] = with_confirmation(read["verdict"], fsutil.read_json(confirmation) if confirmation else None)
    rep.render(fsutil.read_json(plan), read, output, Path(__file__).resolve().parent.parent, figures)


def fetch_weights(url: str, output: str, md5: str = "", sha256: str = "") -> None:
    """Download and hash-check ImageNet weights (MD5 or SHA256 as published; with
    neither, the first download's SHA256 is recorded and checked later)."""
    from scripts.weights.weight_files import fetch

    print(f"{output}: sha256 {fetch(url, md5 or None, output, sha256=sha256 or None)}")


def download_kaggle(slug: str, root: str, manifest: str, marker: str, subfolder: str = "") -> None:
    """Download a Kaggle dataset (kaggle CLI) into its root.

    ``subfolder``: the folder inside the archive that holds train/ and test/."""
    from scripts.data.download import kaggle_dataset

    kaggle_dataset(slug, subfolder, root, manifest, marker)
