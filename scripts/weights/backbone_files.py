"""A user's own network as a backbone: a ``.keras`` file declared under ``backbones:``
(config/README.md, "Bring your own backbone").

The declaration says what the file cannot: its SHA256, its preprocessing (a Keras
family's ``preprocess_input`` or a plain rescale), its input channels, the layer where
the backbone ends and the custom objects it needs. Planning checks it here without
importing Keras; scripts/train/models.py builds the model from it.
"""

from __future__ import annotations

import importlib
import importlib.util
import re
from fractions import Fraction
from pathlib import Path

from scripts.weights.keras_applications import backbone_names, catalogue
from scripts.weights.weight_files import WeightsError, check

# Letters and digits only, as the catalogue's names: safe in Snakemake wildcards and
# folder names (hyphens and underscores separate a run folder's parts).
NAME = re.compile(r"^[a-z][a-z0-9]*$")


def families() -> list[str]:
    """The keras.applications modules a declaration may name as its preprocessing."""
    return sorted({entry["module"] for entry in catalogue().values()})


def rescale(preprocessing: dict) -> tuple[float, float]:
    """``(scale, offset)`` of a ``{rescale, offset}`` preprocessing; ``rescale`` may be a
    fraction written as text (``1/255``)."""
    return float(Fraction(str(preprocessing["rescale"]))), float(preprocessing.get("offset", 0.0))


def custom_object(path: str, declared_as: str, backbone_file: str | Path):
    """The object ``module.attribute`` names, imported; a clear error naming the
    backbone file and the object when it cannot be."""
    module, _, attribute = path.rpartition(".")
    try:
        return getattr(importlib.import_module(module), attribute)
    except (ImportError, AttributeError, ValueError) as error:
        raise WeightsError(f"backbone file {backbone_file}: custom object {declared_as} ({path}) cannot be "
                           f"loaded: {error}") from None


def declaration_problems(name: str, declaration: dict) -> list[str]:
    """What is wrong with backbone ``name``'s declaration, each problem naming its key:
    the name, the preprocessing, the custom objects (their modules must exist; they are
    imported only where the model is built) and the file's SHA256."""
    key = f"backbones.{name}"
    problems = []
    if not NAME.match(name):
        problems.append(f"{key}: the name must be lower-case letters and digits (it is a Snakemake wildcard "
                        "and a folder name's part)")
    if name in backbone_names():
        problems.append(f"{key}: {name!r} is the name of a keras.applications backbone of the catalogue; "
                        "give your file another name")
    preprocessing = declaration["preprocessing"]
    if isinstance(preprocessing, str) and preprocessing not in families():
        problems.append(f"{key}.preprocessing: {preprocessing!r} is not one of {families()} "
                        "(or {rescale: 1/255, offset: 0})")
    elif isinstance(preprocessing, dict):
        try:
            rescale(preprocessing)
        except (ValueError, ZeroDivisionError):
            problems.append(f"{key}.preprocessing.rescale: {preprocessing['rescale']!r} is not a number or a "
                            "fraction such as 1/255")
    for declared_as, path in declaration.get("custom_objects", {}).items():
        module = path.rpartition(".")[0]
        try:
            found = bool(module) and importlib.util.find_spec(module) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            problems.append(f"{key}.custom_objects.{declared_as}: backbone file {declaration['path']} needs "
                            f"{declared_as}, but module {module or path!r} cannot be imported")
    try:
        check(declaration["path"], sha256=declaration["sha256"])
    except WeightsError as error:
        problems.append(f"{key}: {str(error).replace('weights file', 'backbone file')}")
    return problems
