"""The data steps (workflow/rules/data.smk): manifests, decoding, splits, copies and leakage, downloads."""
