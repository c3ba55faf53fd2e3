"""The Slurm site values (workflow/rules/site.smk) and what they read from Snakemake."""
