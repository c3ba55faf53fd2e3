"""The study plan (workflow/rules/common.smk): the config's checks, the run grid, the packs."""
