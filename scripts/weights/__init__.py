"""Pretrained weights files (workflow/rules/weights.smk): the registry, fetching, the HED VGG16."""
