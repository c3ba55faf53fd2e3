"""Optional dataset download on the login node: a Kaggle dataset through the ``kaggle``
CLI (the user's own API token), unpacked next to the dataset root and moved into place
only once complete. The verify rule then checks it against the manifest."""

from __future__ import annotations

import datetime
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from scripts.common import fsutil
from scripts.data.manifest import DataError, make_manifest


def kaggle_dataset(slug: str, subfolder: str, root: str | Path, manifest: str | Path,
                   marker: str | Path) -> None:
    """Download ``slug`` into ``root`` unless ``root`` already holds data; write ``marker``.

    Without a shipped ``manifest`` one is written from the files as downloaded (trust on
    first use, recorded in the marker): later runs then detect any change to them.
    """
    root, manifest = Path(root), Path(manifest)
    record = {"kaggle": slug, "root": str(root)}
    if root.is_dir() and any(root.iterdir()):
        print(f"{root} already holds data: not downloading {slug}")
        fsutil.write_json(marker, {**record, "downloaded": False, **_ensure_manifest(root, manifest)})
        return
    if shutil.which("kaggle") is None:
        raise DataError(
            f"dataset {slug} is needed at {root} but the kaggle command is not installed.\n"
            "Install it (pip install kaggle), put your API token in ~/.kaggle/kaggle.json "
            "(or set KAGGLE_USERNAME and KAGGLE_KEY), and run again; or download the "
            f"dataset yourself and unpack it so that {root}/train exists."
        )
    root.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=root.parent, prefix=f".download-{root.name}-"))
    try:
        done = subprocess.run(["kaggle", "datasets", "download", "-d", slug, "-p", str(staging), "--unzip"],
                              capture_output=True, text=True)
        if done.returncode:
            raise DataError(f"kaggle could not download {slug} (exit {done.returncode}); nothing was "
                            f"placed at {root}.\n{(done.stdout + done.stderr).strip()[-2000:]}")
        source = staging / subfolder if subfolder else staging
        if not (source / "train").is_dir():
            found = sorted(str(p.relative_to(staging)) for p in staging.rglob("train") if p.is_dir())
            raise DataError(f"{slug}: no train/ folder at {source.relative_to(staging) or '.'} of the "
                            f"archive; set the dataset's kaggle subfolder to the folder above one of: "
                            f"{found or 'none found'}")
        if root.exists():
            root.rmdir()  # empty (checked above)
        os.replace(source, root)  # same filesystem: the dataset appears complete or not at all
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    print(f"downloaded {slug} to {root}")
    fsutil.write_json(marker, {**record, "downloaded": True, "subfolder": subfolder,
                               "at": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
                               **_ensure_manifest(root, manifest)})


def _ensure_manifest(root: Path, manifest: Path) -> dict:
    if manifest.is_file():
        return {"manifest": str(manifest), "manifest_created": False}
    fsutil.write_text(manifest, make_manifest(root))
    print(f"WARNING: no manifest shipped for {root}: wrote {manifest} from the files as they are now "
          "(trust on first use). Keep it with your config; later runs verify against it.")
    return {"manifest": str(manifest), "manifest_created": True}
