"""The one traced inference pass of a run: class probabilities, logits, pooled
backbone features and the Grad-CAM heatmap of the predicted class, per image.

Tracing a ``tf.function`` over a large backbone costs seconds of Python on a CPU host,
and Keras's own ``predict``/validation each trace again, so every run traces one
forward function for validation after every epoch, feature extraction for the cached
frozen strategy and the final predictions (and one more for Grad-CAM). Batches are padded to one shape so the
function is traced once.
"""

from __future__ import annotations

import numpy as np

from scripts.common import tracing
from scripts.train.gradcam import grad_cam
from scripts.train.input_pipeline import padded_batches

OUTPUTS = ("probabilities", "logits", "pooled", "cams")


class InferencePass:
    """``run(images, cams=...)`` -> dict of ``probabilities``, ``logits``, ``pooled`` (the
    ``head_pool`` output, before standardisation) and, with ``cams=True``, ``cams``
    (Grad-CAM of the predicted class's logit at ``layer_name``, in [0, 1], float16).

    Two traced functions, each traced on first use: a forward pass (feature extraction,
    the validation pass after every epoch) and the forward-and-backward pass Grad-CAM
    needs (the test set, once). The backward pass costs memory and time that only the
    Grad-CAM maps need, so every other pass runs forward only, and its one extra trace
    is paid once per run.
    """

    def __init__(self, model, layer_name: str, batch_size: int = 32):
        import keras
        import tensorflow as tf

        self.batch_size, self.layer_name = batch_size, layer_name
        outputs = [model.get_layer(layer_name).output, model.get_layer("head_pool").output,
                   model.get_layer("logits").output, model.output]
        network = keras.Model(model.inputs, outputs)

        @tf.function(reduce_retracing=True)
        def forward(batch):
            _, pooled, logits, probabilities = network(batch, training=False)
            return {"probabilities": probabilities, "logits": logits, "pooled": tf.cast(pooled, tf.float32)}

        @tf.function(reduce_retracing=True)
        def explain(batch):
            with tf.GradientTape() as tape:
                features, pooled, logits, probabilities = network(batch, training=False)
                predicted = tf.argmax(logits, axis=1)
                # Images do not interact at inference, so the gradient of the batch's
                # sum is each image's own gradient.
                score = tf.reduce_sum(tf.gather(logits, predicted, axis=1, batch_dims=1))
            cams = grad_cam(features, tape.gradient(score, features))
            return {"probabilities": probabilities, "logits": logits,
                    "pooled": tf.cast(pooled, tf.float32), "cams": cams}

        self._forward, self._explain = forward, explain

    def run(self, images: np.ndarray, cams: bool = False) -> dict[str, np.ndarray]:
        with tracing.phase("inference pass", images=len(images)):
            return self._run(images, cams)

    def _run(self, images: np.ndarray, cams: bool) -> dict[str, np.ndarray]:
        import tensorflow as tf

        function, keys = (self._explain, OUTPUTS) if cams else (self._forward, OUTPUTS[:3])
        parts: dict[str, list] = {key: [] for key in keys}
        for batch, real in padded_batches(images, self.batch_size):
            outputs = function(tf.cast(tf.constant(batch), tf.float32))
            for key in keys:
                parts[key].append(outputs[key].numpy()[:real])
        result = {key: np.concatenate(value) for key, value in parts.items()}
        if cams:
            result["cams"] = result["cams"].astype(np.float16)
        return result
