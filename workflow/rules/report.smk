localrules:
    aggregate,
    report,


rule aggregate:
    """One table of every run plus mean and 95% CI over seeds per combination."""
    input:
        metrics=run_outputs("metrics.json"),
        info=run_outputs("train.json"),
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
        gradcam=run_outputs("gradcam.npz"),
        predictions=run_outputs("predictions.csv"),
    output:
        html=report(
            "results/report.html",
            caption="../report/study.rst",
            category="Study report",
        ),
        figures=report(
            directory("results/figures"),
            patterns=["{dataset}-{figure}.png"],
            caption="../report/figure.rst",
            category="Figures",
            subcategory="{dataset}",
            labels={"dataset": "{dataset}", "figure": "{figure}"},
        ),
    log:
        "logs/report.log",
    conda:
        "../../envs/report.yaml"
    params:
        study=json.dumps({"config": config, "skipped": SKIPPED}),
    shell:
        "python -m scripts report --study {params.study:q} --table {input.table}"
        " --output {output.html} --figures {output.figures} > {log} 2>&1"
