rule train:
    """Fit one run (resuming from its checkpoint), then evaluate it on the validation
    and test sets with Grad-CAM in the same process."""
    input:
        images=images_cache,
        split=SPLIT,
        verified=DATASET_FILES["verify"],
        weights=weights_input,
    output:
        **{kind: f"{RUN_DIR}/{name}" for kind, name in RUN_FILES.items()},
    log:
        f"{RUN_LOG_DIR}/train.log",
    conda:
        "../../envs/tensorflow.yaml"
    threads: TRAIN_THREADS
    params:
        settings=run_settings,
        checkpoint=lambda w: f"{run_dir(w)}/checkpoint",
        feature_cache=FEATURE_CACHE,
    shell:
        "python -m scripts train --dataset {wildcards.dataset} --model {wildcards.model}"
        " --strategy {wildcards.strategy} --weights-name {wildcards.weights}"
        " --fraction {wildcards.fraction} --seed {wildcards.seed}"
        " --images {input.images} --split {input.split} --settings {params.settings:q}"
        " --checkpoint {params.checkpoint} --feature-cache {params.feature_cache}"
        " --model-weights {output.model} --history {output.history} --info {output.info}"
        " --predictions {output.predictions} --val-predictions {output.val_predictions}"
        " --metrics {output.metrics} --gradcam {output.gradcam}"
        " --threads {threads} > {log} 2>&1"
