localrules:
    plan,


rule plan:
    """The study plan: the validated config with its defaults, every run with its
    folder, every skipped combination with its reason. Aggregate and report read it,
    so nothing large travels on a command line."""
    output:
        PLAN,
    log:
        "logs/plan.log",
    params:
        digest=PLAN_DIGEST,
    run:
        write_plan(output[0])


rule aggregate:
    """Every run in one table; per-configuration summaries with seed and test-set
    intervals; paired comparisons with the baseline; the validation-chosen verdict."""
    input:
        plan=PLAN,
        metrics=run_files("metrics"),
        info=run_files("info"),
        predictions=run_files("predictions"),
        val_predictions=run_files("val_predictions"),
        gradcam=run_files("gradcam"),
        external=run_files("external"),
        overlap=overlap_files(),
        splits=first_splits(),
    output:
        **TABLES,
    log:
        "logs/aggregate.log",
    localrule: on_login_node("aggregate")
    conda:
        "../../envs/report.yaml"
    params:
        tables=named_paths("output"),
    shell:
        "python -m scripts aggregate --plan {input.plan} --tables {params.tables:q} > {log} 2>&1"


rule report:
    """The self-contained HTML report (figures and Grad-CAM panels inline)."""
    input:
        **TABLES,
        plan=PLAN,
        verified=dataset_files("verify"),
        conversions=dataset_files("conversions"),
        thumbnails=dataset_files("thumbnails", TRAINED),
        leakage=dataset_files("leakage", TRAINED),
        splits=first_splits(),
        history=run_files("history"),
        predictions=run_files("predictions"),
        gradcam=run_files("gradcam"),
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
    localrule: on_login_node("report")
    conda:
        "../../envs/report.yaml"
    params:
        tables=named_paths("input", TABLES),
    shell:
        "python -m scripts report --plan {input.plan} --tables {params.tables:q}"
        " --output {output.html} --figures {output.figures} > {log} 2>&1"
