"""The seed paper's appendix notebook, as written, in one process (tf_keras, Keras 2).

``python -m benchmarks.notebook_baseline --data ROOT --image-size 64 --output timings.json``

What the notebook does, cell by cell: ``ImageDataGenerator`` with
``rescale=1/255`` and augmentation (``rotation_range``, ``width/height_shift_range``,
``zoom_range``, ``horizontal_flip``) feeding ``flow_from_directory`` on ``ROOT/train``,
validation from the same generator with ``validation_split`` (so validation images
are augmented too, as there); a baseline CNN for 5 epochs; ResNet50 (``weights=None``)
frozen with a new head for 5 epochs, then its top 30 layers unfrozen at 1e-5 for 5
more; each model evaluated on ``ROOT/test`` (``evaluate``, ``predict``, scikit-learn's
classification report and confusion matrix). Decoding every JPEG every epoch is part
of what is measured. The augmentation ranges are the workflow's defaults converted to
``ImageDataGenerator`` units, so both sides augment alike.

The benchmark (``python -m benchmarks``, section 5) runs this as a subprocess and reads
the phase timings written to ``--output``. Heavy imports happen inside ``main`` so
that their cost is measured as a phase of its own.
"""

from __future__ import annotations

import time

STARTED = time.time()  # first statement after the interpreter's own start-up

import argparse  # noqa: E402  (after STARTED on purpose)
import contextlib  # noqa: E402
import json  # noqa: E402
import resource  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

# The workflow's default augmentation (config schema) in ImageDataGenerator units:
# rotation as a fraction of a full turn -> degrees; shift and zoom are fractions in both.
AUGMENTATION = {"rotation_range": 0.05 * 360, "width_shift_range": 0.05, "height_shift_range": 0.05,
                "zoom_range": 0.1, "horizontal_flip": True}
UNFROZEN_LAYERS = 30


class Timeline:
    """Named phases with wall-clock start and end (``time.time()``), written as JSON."""

    def __init__(self):
        self.phases: list[dict] = []
        self.epochs: dict[str, list[float]] = {}

    @contextlib.contextmanager
    def phase(self, name: str):
        start = time.time()
        try:
            yield
        finally:
            self.phases.append({"name": name, "start": start, "end": time.time()})

    def epoch_timer(self, name: str):
        """A Keras callback that records each epoch's seconds under ``name``."""
        import tf_keras

        seconds = self.epochs.setdefault(name, [])
        begun = {}
        return tf_keras.callbacks.LambdaCallback(
            on_epoch_begin=lambda epoch, logs: begun.update(t=time.perf_counter()),
            on_epoch_end=lambda epoch, logs: seconds.append(time.perf_counter() - begun["t"]))


def generators(root: Path, image_size: int, batch_size: int, validation_split: float, seed: int):
    """``(train, validation, test)`` flows as the notebook builds them."""
    from tf_keras.preprocessing.image import ImageDataGenerator

    augmented = ImageDataGenerator(rescale=1 / 255, validation_split=validation_split, **AUGMENTATION)
    common = {"target_size": (image_size, image_size), "batch_size": batch_size, "class_mode": "categorical"}
    train = augmented.flow_from_directory(str(root / "train"), subset="training", seed=seed, **common)
    validation = augmented.flow_from_directory(str(root / "train"), subset="validation", seed=seed, **common)
    test = ImageDataGenerator(rescale=1 / 255).flow_from_directory(str(root / "test"), shuffle=False, **common)
    return train, validation, test


def baseline_cnn(image_size: int, n_classes: int):
    """The notebook's baseline: three conv/pool blocks, a dense layer, dropout."""
    from tf_keras import Sequential, layers

    return Sequential([
        layers.Input((image_size, image_size, 3)),
        layers.Conv2D(32, 3, activation="relu"), layers.MaxPooling2D(),
        layers.Conv2D(64, 3, activation="relu"), layers.MaxPooling2D(),
        layers.Conv2D(128, 3, activation="relu"), layers.MaxPooling2D(),
        layers.Flatten(), layers.Dense(128, activation="relu"), layers.Dropout(0.5),
        layers.Dense(n_classes, activation="softmax"),
    ])


def resnet50_with_head(image_size: int, n_classes: int):
    """ResNet50 without top, random init, frozen; GAP -> Dense(256) -> dropout -> softmax."""
    from tf_keras import Model, applications, layers

    base = applications.ResNet50(weights=None, include_top=False, input_shape=(image_size, image_size, 3))
    base.trainable = False
    x = layers.GlobalAveragePooling2D()(base.output)
    x = layers.Dropout(0.5)(layers.Dense(256, activation="relu")(x))
    return Model(base.input, layers.Dense(n_classes, activation="softmax")(x)), base


def compile_model(model, learning_rate: float) -> None:
    import tf_keras

    model.compile(optimizer=tf_keras.optimizers.Adam(learning_rate), loss="categorical_crossentropy",
                  metrics=["accuracy"])


def evaluate(model, test) -> dict:
    """``evaluate`` and ``predict`` on the test folder, then the scikit-learn reports."""
    from sklearn.metrics import classification_report, confusion_matrix

    loss, accuracy = model.evaluate(test, verbose=0)
    predicted = model.predict(test, verbose=0).argmax(axis=1)
    report = classification_report(test.classes, predicted, target_names=list(test.class_indices),
                                   zero_division=0, output_dict=True)
    matrix = confusion_matrix(test.classes, predicted)
    return {"loss": float(loss), "accuracy": float(accuracy), "f1_macro": report["macro avg"]["f1-score"],
            "confusion_matrix": matrix.tolist()}


def fit(timeline: Timeline, phase: str, key: str, model, train, validation, epochs: int) -> None:
    """``model.fit`` as the notebook calls it, timed as phase ``"<phase> <epochs> epochs"``
    with each epoch's seconds under ``key``."""
    with timeline.phase(f"{phase} {epochs} epochs"):
        model.fit(train, validation_data=validation, epochs=epochs, verbose=0,
                  callbacks=[timeline.epoch_timer(key)])


def run(args, timeline: Timeline) -> dict:
    """Every cell of the notebook in order; returns the test results of both models."""
    with timeline.phase("import tensorflow, tf_keras, scikit-learn"):
        import sklearn.metrics  # noqa: F401
        import tensorflow  # noqa: F401
        import tf_keras

        tf_keras.utils.set_random_seed(args.seed)
    with timeline.phase("flow_from_directory (list the folders)"):
        train, validation, test = generators(Path(args.data), args.image_size, args.batch_size,
                                             args.validation_split, args.seed)
    n_classes = train.num_classes
    results = {}
    with timeline.phase("baseline CNN: build + compile"):
        baseline = baseline_cnn(args.image_size, n_classes)
        compile_model(baseline, 1e-3)
    fit(timeline, "baseline CNN: fit", "baseline", baseline, train, validation, args.baseline_epochs)
    with timeline.phase("baseline CNN: evaluate on test"):
        results["baseline_cnn"] = evaluate(baseline, test)
    with timeline.phase("ResNet50: build + compile (frozen, new head)"):
        model, base = resnet50_with_head(args.image_size, n_classes)
        compile_model(model, 1e-3)
    fit(timeline, "ResNet50: fit head", "head", model, train, validation, args.head_epochs)
    with timeline.phase(f"ResNet50: unfreeze top {UNFROZEN_LAYERS} layers + compile"):
        base.trainable = True
        for layer in base.layers[:-UNFROZEN_LAYERS]:
            layer.trainable = False
        compile_model(model, 1e-5)
    fit(timeline, "ResNet50: fine-tune", "finetune", model, train, validation, args.finetune_epochs)
    with timeline.phase("ResNet50: evaluate on test"):
        results["resnet50"] = evaluate(model, test)
    results["images"] = {"train": train.samples, "validation": validation.samples, "test": test.samples}
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.notebook_baseline", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="dataset root with train/ and test/ class folders")
    parser.add_argument("--image-size", type=int, required=True)
    parser.add_argument("--output", required=True, help="JSON file for the phase timings and results")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--baseline-epochs", type=int, default=5)
    parser.add_argument("--head-epochs", type=int, default=5)
    parser.add_argument("--finetune-epochs", type=int, default=5)
    parser.add_argument("--validation-split", type=float, default=0.15,
                        help="share of train/ held out (the workflow's data.val_fraction)")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    timeline = Timeline()
    results = run(args, timeline)
    Path(args.output).write_text(json.dumps({
        "started": STARTED, "finished": time.time(), "phases": timeline.phases, "epochs": timeline.epochs,
        "results": results, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
