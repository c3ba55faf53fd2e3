"""Pretrained weights offline, for real: a local HTTP server, the fetch rule, the cache."""

from __future__ import annotations

import hashlib
import json
import shutil
import socket
import threading
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml
from conftest import copy_dataset, random_notop_file, snakemake, validated, write_config

from scripts.common.layout import RUN_FILES
from scripts.weights.weight_files import WeightsError, fetch


class Handler(SimpleHTTPRequestHandler):
    requests: list[str] = []
    truncate = False

    def do_GET(self):
        Handler.requests.append(self.path)
        if not Handler.truncate:
            return super().do_GET()
        body = (Path(self.directory) / self.path.lstrip("/")).read_bytes()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body[: len(body) // 2])  # then the connection drops

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def weights_server(tmp_path_factory):
    """Serves an EfficientNetB0 ``*_notop.h5`` file from 127.0.0.1 in the legacy h5 layout
    of Keras's published files (random weights and BatchNorm statistics)."""
    served = tmp_path_factory.mktemp("served")
    random_notop_file(served / "efficientnetb0_notop.h5", "efficientnetb0")
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(Handler, directory=str(served)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    data = (served / "efficientnetb0_notop.h5").read_bytes()
    yield {"url": f"http://127.0.0.1:{server.server_port}/efficientnetb0_notop.h5",
           "md5": hashlib.md5(data).hexdigest(), "sha256": hashlib.sha256(data).hexdigest(),
           "file": served / "efficientnetb0_notop.h5"}
    server.shutdown()


def backbone_weights_unchanged(run_dir: Path, weights_file: Path, n_classes: int = 3) -> int:
    """Compare every backbone layer of the run's saved model with the weights file as
    Keras's own EfficientNetB0 loads it; returns how many layers hold weights."""
    import keras
    import numpy as np

    from scripts.train.models import build_model

    model, backbone = build_model("efficientnetb0", 32, n_classes, None, dropout=0.3, bn_momentum=0.7)
    model.load_weights(run_dir / "model.weights.h5")
    reference = keras.applications.EfficientNetB0(include_top=False, weights=str(weights_file),
                                                  input_shape=(32, 32, 3))
    compared = 0
    for name in backbone:
        saved = model.get_layer(name).get_weights()
        if not saved or name.startswith(("rescaling", "normalization")):
            continue  # input scaling has no learned weights; its statistics are checked by test_models
        for ours, theirs in zip(saved, reference.get_layer(name).get_weights(), strict=True):
            np.testing.assert_array_equal(ours, theirs, err_msg=name)
        compared += 1
    return compared


@pytest.fixture(autouse=True)
def reset_handler():
    Handler.requests.clear()
    Handler.truncate = False


def test_fetch_verifies_and_caches_atomically(weights_server, tmp_path):
    dest = tmp_path / "cache" / "efficientnetb0_notop.h5"
    assert fetch(weights_server["url"], weights_server["md5"], dest) == weights_server["sha256"]
    assert dest.exists() and list(dest.parent.iterdir()) == [dest]


def test_a_published_sha256_is_checked_like_an_md5(weights_server, tmp_path):
    """ConvNeXt's and EfficientNetV2's weights are published with a SHA256."""
    dest = tmp_path / "cache" / "w.h5"
    assert fetch(weights_server["url"], None, dest, sha256=weights_server["sha256"]) == weights_server["sha256"]
    with pytest.raises(WeightsError, match="SHA256 .* does not match the expected 0{64}"):
        fetch(weights_server["url"], None, tmp_path / "other" / "w.h5", sha256="0" * 64)
    assert not (tmp_path / "other" / "w.h5").exists()


def test_a_file_without_a_published_hash_is_trusted_on_first_use_then_verified(weights_server, tmp_path):
    """MobileNet's and MobileNetV2's weights have no published hash: the first download
    records its SHA256, a later download and every training run must match it."""
    from scripts.weights.weight_files import first_use_record, first_use_sha256

    dest = tmp_path / "cache" / "mobilenet_no_top.h5"
    with pytest.raises(WeightsError, match="no published hash and no record of its first download"):
        first_use_sha256(dest)
    assert fetch(weights_server["url"], None, dest) == weights_server["sha256"]
    record = first_use_record(dest)
    assert record.read_text().split() == [weights_server["sha256"], "efficientnetb0_notop.h5"]
    assert first_use_sha256(dest) == weights_server["sha256"]
    record.write_text("0" * 64 + "  efficientnetb0_notop.h5\n")  # a later download of other bytes
    dest.unlink()
    with pytest.raises(WeightsError, match="does not match the expected 0{64}"):
        fetch(weights_server["url"], None, dest)
    assert not dest.exists()


def test_wrong_hash_leaves_nothing_in_the_cache(weights_server, tmp_path):
    dest = tmp_path / "cache" / "w.h5"
    with pytest.raises(WeightsError, match="MD5 does not match the published 0{32}"):
        fetch(weights_server["url"], "0" * 32, dest)
    assert list(dest.parent.iterdir()) == []


def test_truncated_download_leaves_nothing_in_the_cache(weights_server, tmp_path):
    Handler.truncate = True
    dest = tmp_path / "cache" / "w.h5"
    with pytest.raises(WeightsError, match="interrupted.*nothing cached"):
        fetch(weights_server["url"], weights_server["md5"], dest, timeout=10)
    assert list(dest.parent.iterdir()) == []


def test_unreachable_network_gives_prestaging_instructions(tmp_path):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed_port = sock.getsockname()[1]
    with pytest.raises(WeightsError, match=r"pre-stage the file: copy resnet.h5 \(MD5 abc\) to") as error:
        fetch(f"http://127.0.0.1:{closed_port}/resnet.h5", "abc", tmp_path / "resnet.h5", timeout=5)
    assert "weights: none" in str(error.value)
    assert not (tmp_path / "resnet.h5").exists()


def test_workflow_fetches_once_and_two_runs_reuse_the_file_offline(weights_server, tmp_path):
    registry = tmp_path / "registry.yaml"
    registry.write_text(yaml.safe_dump({"efficientnetb0": {"url": weights_server["url"],
                                                           "md5": weights_server["md5"]}}))
    data = copy_dataset(tmp_path / "data", {"train": 8, "test": 3})
    config = write_config(tmp_path / "c.yaml", data, models=["efficientnetb0"], strategies=["frozen"],
                          seeds=[1, 2], weights="imagenet", weights_registry=str(registry),
                          weights_cache=str(tmp_path / "cache"))
    snakemake(tmp_path, "--configfile", str(config), "--cores", "2")
    assert Handler.requests == ["/efficientnetb0_notop.h5"]
    for seed in (1, 2):
        run_dir = tmp_path / f"results/tiny/runs/efficientnetb0/frozen/imagenet/frac1.0/seed{seed}"
        info = json.loads((run_dir / "train.json").read_text())
        assert info["weights"]["source"] == "imagenet"
        assert info["weights"]["sha256"] == weights_server["sha256"]
        # the file was loaded, and the frozen backbone stayed as loaded
        assert backbone_weights_unchanged(run_dir, tmp_path / "cache" / "efficientnetb0_notop.h5") > 100
    html = (tmp_path / "results/report.html").read_text()
    assert weights_server["sha256"] in html and "NOT pretrained" not in html

    # a corrupted cache file is refused by the training job itself, naming the file (the
    # runs' folders removed, as config/README.md says to redo finished runs)
    cached = tmp_path / "cache" / "efficientnetb0_notop.h5"
    cached.write_bytes(cached.read_bytes()[:-100])
    shutil.rmtree(tmp_path / "results/tiny/runs")
    result = snakemake(tmp_path, "--configfile", str(config), "--cores", "1", "--forcerun", "train",
                       check=False)
    assert result.returncode != 0
    assert f"weights file {cached}: MD5 does not match" in result.stderr
    assert Handler.requests == ["/efficientnetb0_notop.h5"]  # never downloaded again


def test_training_job_opens_no_network_connection(weights_server, tmp_path, monkeypatch):
    """The train step loads weights from the cached file only: any socket is an error."""
    from scripts import stages

    cache = tmp_path / "efficientnetb0_notop.h5"
    fetch(weights_server["url"], weights_server["md5"], cache)
    work = tmp_path / "work"
    data = copy_dataset(work / "data", {"train": 8, "test": 3})
    config = write_config(work / "c.yaml", data, models=["efficientnetb0"], strategies=["frozen"])
    snakemake(work, "--configfile", str(config), "--cores", "1", "--until", "split", "prepare_images")

    def no_network(*args, **kwargs):
        raise AssertionError("a training job opened a network connection")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    config = validated(yaml.safe_load(config.read_text()))
    settings = {"training": config["training"], "positive_class": None, "evaluation": config["evaluation"],
                "gradcam": config["gradcam"],
                "weights": {"source": "imagenet", "path": str(cache), "md5": weights_server["md5"]}}
    run_dir = work / "run"
    outputs = {name: str(run_dir / file) for name, file in RUN_FILES.items()}
    data = work / "results/tiny"
    stages.train("tiny", "efficientnetb0", "frozen", "imagenet", 1.0, 1, str(data / "data/images_32px.npy"),
                 str(data / "splits/seed1.csv"), settings, outputs, str(run_dir / "checkpoint"), str(work / "cache"),
                 threads=1)
    info = json.loads((run_dir / "train.json").read_text())
    assert info["weights"]["sha256"] == weights_server["sha256"]


def test_a_file_url_mirror_is_fetched_and_checked_like_http(weights_server, tmp_path):
    dest = tmp_path / "cache" / "efficientnetb0_notop.h5"
    url = weights_server["file"].as_uri()
    assert url.startswith("file:///")
    assert fetch(url, weights_server["md5"], dest) == weights_server["sha256"]
    with pytest.raises(WeightsError, match="MD5 does not match"):
        fetch(url, "0" * 32, tmp_path / "other" / "w.h5")
