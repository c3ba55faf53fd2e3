"""The near-copy check's cost: ``python -m benchmarks.near_copies``.

Measures, on the bundled radiographs (demo and Kermany subset, 738 images, tiled to reach
larger sets: the cost does not depend on the pixels): the fingerprint (decode and resize)
per image, the shortlist per query image (its transformed prints) and per query ×
reference pair (the matrix products), and the alignment per shortlisted pair; and how the
shortlist's time grows with the block size. From these it estimates the leakage step at
10,000 test × 50,000 training-pool images: test against the pool, the test set against
itself, and the pool against itself (about 1.25e9 pairs, for the validation split).
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from benchmarks.__main__ import PROJECT, describe_machine
from scripts.data import external
from scripts.data.images import load_image

ROOTS = [PROJECT / "resources" / "demo" / "covid19-cxr-3class", PROJECT / "resources" / "kermany-pneumonia-subset"]


def seconds(function, *args) -> float:
    """CPU seconds of one call (one thread: what a core spends, on a shared machine too)."""
    started = time.process_time()
    function(*args)
    return time.process_time() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--references", type=int, default=8192, help="references the shortlist is timed on")
    parser.add_argument("--queries", type=int, default=256, help="queries the shortlist is timed on")
    args = parser.parse_args()
    import cv2
    from threadpoolctl import threadpool_limits

    cv2.setNumThreads(1)
    threadpool_limits(1)  # per core: the estimate divides by the cores a job gets
    print(describe_machine())
    print("times are CPU seconds of one thread")
    paths = [root / p.relative_to(root) for root in ROOTS for p in sorted(root.glob("*/*/*"))]
    started = time.process_time()
    thumbnails = external.fingerprints([load_image(path, external.FINGERPRINT_SIZE)[0] for path in paths])
    per_image = (time.process_time() - started) / len(paths)
    print(f"decode and fingerprint: {per_image * 1e3:.2f} ms per image ({len(paths)} images)")

    tiled = np.resize(thumbnails, (args.references, *thumbnails.shape[1:]))
    queries = tiled[:args.queries]
    prints = seconds(external._shortlist_prints, queries, external.TRANSFORMS) / len(queries)
    print(f"shortlist prints: {prints * 1e3:.2f} ms per query image ({2 * len(external.TRANSFORMS)} transforms)")
    print("shortlist by block size (queries × references, prints included):")
    per_pair = {}
    for block in (128, 512, 2048):
        took = seconds(external._shortlist, queries, tiled, block, False)
        per_pair[block] = (took - prints * len(queries)) / (len(queries) * len(tiled))
        print(f"  block {block:5d}: {took:.2f} s, {per_pair[block] * 1e9:.1f} ns per pair")
    pair = min(per_pair.values())
    pairs = [(queries[i], tiled[(i * 7 + 1) % len(tiled)], 0, False) for i in range(64)]
    align = seconds(lambda: [external.aligned_correlation(*p) for p in pairs]) / len(pairs)
    print(f"alignment: {align * 1e3:.2f} ms per shortlisted pair ({external.SHORTLIST} per query)")

    test, pool = 10_000, 50_000
    parts = {"test × pool": (test, pool), "test × test": (test, test), "pool × pool (validation split)": (pool, pool)}
    total = per_image * (test + pool)
    print(f"estimate at {test:,} test × {pool:,} training-pool images, one core:")
    print(f"  decode and fingerprint {test + pool:,} images: {per_image * (test + pool) / 60:.1f} min")
    for name, (n_queries, n_references) in parts.items():
        cost = n_queries * (prints + n_references * pair + external.SHORTLIST * align)
        total += cost
        print(f"  {name}: {n_queries * n_references:.3g} ordered pairs, {cost / 3600:.2f} h")
    print(f"  total: {total / 3600:.2f} core-hours; query blocks are independent, so k cores take about 1/k")


if __name__ == "__main__":
    main()
