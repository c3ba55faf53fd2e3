"""The linear probe written into the head: the same probabilities as scikit-learn's
logistic regression, with every class's logit carrying the signal."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import special

from scripts.probe import linear_probe


def separable(n: int, seed: int, classes: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % classes
    features = rng.normal(0, 1, (n, 5))
    features[:, 0] += 1.5 * labels
    return features, labels


@pytest.mark.parametrize("classes", [2, 3])
def test_every_logit_carries_the_signal_and_the_softmax_is_the_probes(classes):
    """Fails for two classes if one logit stayed zero: Grad-CAM of that class is then an
    all-zero map on every image and the shortcut score sees only the other class."""
    from sklearn.linear_model import LogisticRegression

    x_train, y_train = separable(60, 1, classes)
    x_val, y_val = separable(30, 2, classes)
    weights = np.ones(classes)
    kernel, bias, c, _ = linear_probe(x_train, y_train, x_val, y_val, classes, weights, "none")
    assert (np.abs(kernel).sum(axis=0) > 0).all()  # no class left without a gradient
    expected = LogisticRegression(C=c, max_iter=5000).fit(x_train, y_train).predict_proba(x_val)
    assert special.softmax(x_val @ kernel + bias, axis=1) == pytest.approx(expected, abs=1e-6)
    if classes == 2:  # the two logits are the decision split evenly: z/2 and -z/2
        assert kernel[:, 0] == pytest.approx(-kernel[:, 1]) and bias[0] == pytest.approx(-bias[1])
