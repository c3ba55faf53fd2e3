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
    """Backbone -> ``{url, md5}`` (see config/weights-registry.yaml)."""
    return yaml.safe_load(Path(path).read_text())


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


def fetch(url: str, md5: str, dest: str | Path, timeout: float = 60) -> str:
    """Download ``url`` to ``dest`` and return its SHA256.

    The file appears at ``dest`` only after its MD5 matched, so a truncated or wrong
    download never enters the cache.
    """
    dest = Path(dest)
    try:
        with fsutil.atomic_path(dest) as tmp:
            with urllib.request.urlopen(url, timeout=timeout) as response, open(tmp, "wb") as out:
                shutil.copyfileobj(response, out, length=1 << 20)
                expected = response.headers.get("Content-Length")
            received = Path(tmp).stat().st_size
            if expected is not None and received != int(expected):
                raise http.client.IncompleteRead(b"", int(expected) - received)
            return check(tmp, md5=md5)
    except http.client.HTTPException as error:  # e.g. the connection dropped mid-file
        raise WeightsError(f"download of {url} interrupted ({error!r}); nothing cached, try again") from None
    except (urllib.error.URLError, TimeoutError, ConnectionError) as error:
        raise WeightsError(
            f"cannot download {url}: {error}.\n"
            f"Without internet, pre-stage the file: copy {file_name(url)} (MD5 {md5}) to {dest}; "
            "or list a reachable copy in a weights registry (config key weights_registry); "
            "or set weights: none to train without pretraining."
        ) from None
    except WeightsError as error:
        raise WeightsError(f"download of {url} rejected, nothing cached: {error}") from None
