"""cxr-transfer: transfer-learning benchmark for chest X-ray classification.

One module per concern; the Snakemake rules call them through ``python -m scripts``.
Modules that need TensorFlow import it lazily so that data checks, aggregation and
the report stay fast and run on a login node without TensorFlow start-up cost.
"""
