localrules:
    aggregate,
    report,


rule aggregate:
    """One table of every run plus mean and 95% CI over seeds per combination."""
    input:
        metrics=[f"{d}/metrics.json" for d in run_dirs()],
        info=[f"{d}/train.json" for d in run_dirs()],
    output:
        table="results/runs.csv",
        summary="results/summary.csv",
    log:
        "logs/aggregate.log",
    conda:
        "../../envs/report.yaml"
    params:
        runs=json.dumps(RUNS),
    shell:
        "python -m scripts aggregate --runs {params.runs:q} --table {output.table}"
        " --summary {output.summary} > {log} 2>&1"


rule report:
    """The self-contained HTML report (figures and Grad-CAM panels inline)."""
    input:
        table="results/runs.csv",
        verified=expand(
            "results/{dataset}/data/verify.json", dataset=config["datasets"]
        ),
        gradcam=[f"{d}/gradcam.npz" for d in run_dirs()],
        predictions=[f"{d}/predictions.csv" for d in run_dirs()],
    output:
        "results/report.html",
    log:
        "logs/report.log",
    conda:
        "../../envs/report.yaml"
    params:
        study=json.dumps({"config": config, "skipped": SKIPPED}),
    shell:
        "python -m scripts report --study {params.study:q} --table {input.table}"
        " --output {output} > {log} 2>&1"
