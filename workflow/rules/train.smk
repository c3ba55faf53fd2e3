rule train:
    """Fit one run (resuming from its checkpoint), then evaluate it on the validation
    and test sets with Grad-CAM, and on every external test set, in the same process."""
    input:
        images=images_cache,
        split=SPLIT,
        verified=DATASET_FILES["verify"],
        weights=weights_input,
        external=external_inputs,
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
        external=external_settings,
        outputs=named_paths("output"),
    shell:
        "python -m scripts train --dataset {wildcards.dataset} --model {wildcards.model}"
        " --strategy {wildcards.strategy} --weights-name {wildcards.weights}"
        " --fraction {wildcards.fraction} --seed {wildcards.seed}"
        " --images {input.images} --split {input.split} --settings {params.settings:q}"
        " --checkpoint {params.checkpoint} --feature-cache {params.feature_cache}"
        " --external-tests {params.external:q} --outputs {params.outputs:q}"
        " --threads {threads} > {log} 2>&1"
