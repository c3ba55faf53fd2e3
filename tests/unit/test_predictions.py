"""The run's predictions tables: external test sets through their class maps."""

from __future__ import annotations

import numpy as np
import pandas as pd

from scripts.train.predictions import evaluate_external


class ImageIdInference:
    """A stand-in for the trained model's inference pass: image ``i`` (every pixel ``i``)
    gets the probabilities ``PROBABILITIES[i]`` of the trained classes a, b, c."""

    PROBABILITIES = np.array([[0.6, 0.3, 0.1], [0.1, 0.2, 0.7], [0.2, 0.5, 0.3], [0.3, 0.3, 0.4]])

    def run(self, images):
        return {"probabilities": self.PROBABILITIES[np.asarray(images)[:, 0, 0, 0]]}


def external_test(name: str, image_ids: list[int], splits: list[str], class_map: dict) -> dict:
    """An external test as the train step hands it over: decoded images and index table."""
    images = np.repeat(np.asarray(image_ids, np.uint8), 2 * 2 * 3).reshape(-1, 2, 2, 3)
    labels = sorted(set(class_map.values()))
    index = pd.DataFrame({"path": [f"{s}/{i}.png" for s, i in zip(splits, image_ids, strict=True)], "split": splits,
                          "label": [labels[i % len(labels)] for i in image_ids]})
    return {"dataset": name, "class_map": class_map, "images": images, "index": index}


def test_external_predictions_are_the_collapsed_probabilities_of_each_test_image():
    """ext1 maps a, b -> SICK and c -> WELL; ext2 maps each class to its own. Training
    images of the external sets are not evaluated."""
    tests = [external_test("ext1", [0, 1, 2], ["test", "train", "test"],
                           {"a": "SICK", "b": "SICK", "c": "WELL"}),
             external_test("ext2", [3, 1], ["test", "test"], {"a": "A", "b": "B", "c": "C"})]
    table = evaluate_external(ImageIdInference(), ["a", "b", "c"], tests)
    assert list(table.columns) == ["dataset", "path", "label", "predicted", "p_A", "p_B", "p_C", "p_SICK", "p_WELL"]
    assert list(table["dataset"]) == ["ext1", "ext1", "ext2", "ext2"]
    assert list(table["path"]) == ["test/0.png", "test/2.png", "test/3.png", "test/1.png"]
    assert list(table["predicted"]) == ["SICK", "SICK", "C", "C"]
    np.testing.assert_allclose(table["p_SICK"][:2], [0.9, 0.7])
    np.testing.assert_allclose(table["p_WELL"][:2], [0.1, 0.3])
    np.testing.assert_allclose(table[["p_A", "p_B", "p_C"]][2:], ImageIdInference.PROBABILITIES[[3, 1]])
    assert table[["p_A", "p_B", "p_C"]][:2].isna().all().all() and table[["p_SICK", "p_WELL"]][2:].isna().all().all()
    assert list(evaluate_external(ImageIdInference(), ["a", "b", "c"], []).columns) == [
        "dataset", "path", "label", "predicted"]
