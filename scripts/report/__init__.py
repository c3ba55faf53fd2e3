"""The aggregate and report steps (workflow/rules/report.smk): tables, figures, the HTML report."""
