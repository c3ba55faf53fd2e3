"""Performance benchmarks of the workflow (``python -m benchmarks``, ``make benchmark``).

Not part of the installed package: they measure ``scripts`` from the outside, through
the phases it marks (``scripts.common.tracing``), and compare it with the seed notebook."""
