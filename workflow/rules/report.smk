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
        digest=STUDY.plan_digest,
    run:
        fsutil.write_json(output[0], STUDY.plan)


checkpoint aggregate:
    """Every run in one table; per-configuration summaries with seed and test-set
    intervals; paired comparisons with the baseline; the validation-chosen verdict. A
    checkpoint: its choice decides which runs the confirmation stage trains."""
    input:
        plan=PLAN,
        packs=STUDY.pack_records(),
        overlap=STUDY.overlap_files(),
        splits=STUDY.first_splits(),
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


rule confirm:
    """The confirmation stage: the prespecified comparison of the validation-chosen
    configuration against the baseline on fresh seeds of both, trained in packs by the
    train rule after the choice (evaluation.confirmation_seeds)."""
    input:
        plan=PLAN,
        verdict=TABLES["verdict"],
        packs=confirmation_packs,
        splits=STUDY.first_splits(),
    output:
        CONFIRMATION,
    log:
        "logs/confirm.log",
    localrule: on_login_node("confirm")
    conda:
        "../../envs/report.yaml"
    shell:
        "python -m scripts confirm --plan {input.plan} --verdict {input.verdict}"
        " --output {output} > {log} 2>&1"


rule report:
    """The self-contained HTML report (figures and Grad-CAM panels inline)."""
    input:
        **TABLES,
        plan=PLAN,
        confirmation=CONFIRMATION,
        verified=STUDY.dataset_files("verify"),
        conversions=STUDY.dataset_files("conversions"),
        thumbnails=STUDY.dataset_files("thumbnails", STUDY.trained),
        leakage=STUDY.dataset_files("leakage", STUDY.trained),
        splits=STUDY.first_splits(),
        packs=STUDY.pack_records(),
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
        " --confirmation {input.confirmation}"
        " --output {output.html} --figures {output.figures} > {log} 2>&1"
