"""Pretrained backbone weights, the HPC way: fetched once on the login node,
hash-checked, written atomically to a cache, and only ever read from that file by
training jobs (compute nodes usually have no internet).
"""

from __future__ import annotations

import http.client
import shutil
import urllib.error
import urllib.request
from pathlib import Path

import yaml

from scripts.common import fsutil, tracing

# The HED-retrained VGG16 (``python -m scripts hed-weights``, scripts/weights/edge_vgg16.py): the
# workflow's rule ``hed_weights`` writes it offline into ``weights_cache`` under this name.
HED_VGG16_FILE = "vgg16_hed_notop.h5"


class WeightsError(Exception):
    """A weights file is missing, unreachable or does not match its hash."""


def load_registry(path: str | Path) -> dict[str, dict]:
    """Backbone -> ``{url, md5 | sha256}`` (see config/weights-registry.yaml)."""
    return yaml.safe_load(Path(path).read_text())


def first_use_record(path: str | Path) -> Path:
    """Where the SHA256 of a weights file with no published hash is recorded at its first
    download (trust on first use)."""
    return Path(f"{path}.sha256")


def first_use_sha256(path: str | Path) -> str:
    """The SHA256 the first download of ``path``, a file with no published hash, recorded."""
    record = first_use_record(path)
    if not record.is_file():
        raise WeightsError(f"weights file {path} has no published hash and no record of its first download "
                           f"({record}); delete the file and let the workflow download it again")
    return record.read_text().split()[0]


def file_name(url: str) -> str:
    return url.rsplit("/", 1)[1]


@tracing.traced("weights file hash check")
def check(path: str | Path, md5: str | None = None, sha256: str | None = None) -> str:
    """Verify ``path`` against the hashes given; return its SHA256."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"weights file {path} does not exist")
    actual = fsutil.file_digest(path)
    if sha256 and actual != sha256.lower():
        raise WeightsError(f"weights file {path}: SHA256 {actual} does not match the expected {sha256}")
    if md5 and fsutil.file_digest(path, "md5") != md5:
        raise WeightsError(
            f"weights file {path}: MD5 does not match the published {md5} "
            "(corrupt, truncated or a different file)"
        )
    return actual


def fetch(url: str, md5: str | None, dest: str | Path, timeout: float = 60, sha256: str | None = None) -> str:
    """Download ``url`` to ``dest`` and return its SHA256.

    The file appears at ``dest`` only after its MD5 or SHA256 matched, so a truncated or
    wrong download never enters the cache. Where neither is published (Keras's MobileNet
    and MobileNetV2), the first download's SHA256 is recorded beside the file (trust on
    first use) and a later download must match it.
    """
    dest = Path(dest)
    record = first_use_record(dest)
    if not (md5 or sha256) and record.is_file():
        sha256 = first_use_sha256(dest)
    try:
        with fsutil.atomic_path(dest) as tmp:
            with urllib.request.urlopen(url, timeout=timeout) as response, open(tmp, "wb") as out:
                shutil.copyfileobj(response, out, length=1 << 20)
                expected = response.headers.get("Content-Length")
            received = Path(tmp).stat().st_size
            if expected is not None and received != int(expected):
                raise http.client.IncompleteRead(b"", int(expected) - received)
            actual = check(tmp, md5=md5, sha256=sha256)
            if not (md5 or sha256):
                fsutil.write_text(record, f"{actual}  {file_name(url)}\n")
                print(f"WARNING: {url} has no published hash: recorded its SHA256 {actual} in {record} "
                      "(trust on first use); later runs verify the file against it")
            return actual
    except http.client.HTTPException as error:  # e.g. the connection dropped mid-file
        raise WeightsError(f"download of {url} interrupted ({error!r}); nothing cached, try again") from None
    except (urllib.error.URLError, TimeoutError, ConnectionError) as error:
        raise WeightsError(
            f"cannot download {url}: {error}.\n"
            f"Without internet, pre-stage the file: copy {file_name(url)} "
            f"({f'MD5 {md5}' if md5 else f'SHA256 {sha256}' if sha256 else 'no published hash'}) to {dest}; "
            "or list a reachable copy in a weights registry (config key weights_registry); "
            "or set weights: none to train without pretraining."
        ) from None
    except WeightsError as error:
        raise WeightsError(f"download of {url} rejected, nothing cached: {error}") from None
