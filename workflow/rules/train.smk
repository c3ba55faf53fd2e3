if PACKING["runs_per_job"] == 1:

    rule train:
        """Fit one run (resuming from its checkpoint), then evaluate it on the validation
        and test sets with Grad-CAM, and on every external test set, in the same process.
        """
        input:
            images=STUDY.images_cache,
            split=SPLIT,
            verified=DATASET_FILES["verify"],
            weights=STUDY.weights_input,
            external=STUDY.external_inputs,
        output:
            **{kind: f"{RUN_DIR}/{name}" for kind, name in RUN_FILES.items()},
        log:
            f"{RUN_LOG_DIR}/train.log",
        conda:
            "../../envs/tensorflow.yaml"
        threads: TRAIN_THREADS
        resources:
            runtime=STUDY.run_runtime,
        params:
            settings=STUDY.run_settings,
            checkpoint=STUDY.checkpoint,
            feature_cache=FEATURE_CACHE,
            external=STUDY.external_settings,
            outputs=named_paths("output"),
        shell:
            "python -m scripts train --dataset {wildcards.dataset} --model {wildcards.model}"
            " --strategy {wildcards.strategy} --weights-name {wildcards.weights}"
            " --fraction {wildcards.fraction} --seed {wildcards.seed}"
            " --images {input.images} --split {input.split} --settings {params.settings:q}"
            " --checkpoint {params.checkpoint} --feature-cache {params.feature_cache}"
            " --external-tests {params.external:q} --outputs {params.outputs:q}"
            " --threads {threads} > {log} 2>&1"

else:

    rule train:
        """Fit and evaluate the runs of one pack (several seeds of one configuration) in
        one job, as the one-run rule does each, runs_at_once of them side by side. Every
        run writes its own files, log and checkpoint; the pack's record, the job's only
        output, comes once all finished. A failed run leaves its siblings' files in place
        (they are no output of the job), and the pack's next job skips the runs that
        finished."""
        input:
            images=STUDY.images_cache,
            splits=STUDY.pack_splits,
            verified=DATASET_FILES["verify"],
            weights=STUDY.weights_input,
            external=STUDY.external_inputs,
        output:
            PACK_RECORD,
        log:
            f"{PACK_LOG_DIR}/train.log",
        conda:
            "../../envs/tensorflow.yaml"
        threads: TRAIN_THREADS
        resources:
            runtime=STUDY.pack_runtime,
        params:
            settings=STUDY.run_settings,
            members=STUDY.pack_members,
            runs_at_once=PACKING["runs_at_once"],
            feature_cache=FEATURE_CACHE,
            external=STUDY.external_settings,
        shell:
            "python -m scripts train-pack --dataset {wildcards.dataset} --model {wildcards.model}"
            " --strategy {wildcards.strategy} --weights-name {wildcards.weights}"
            " --fraction {wildcards.fraction} --images {input.images}"
            " --settings {params.settings:q} --members {params.members:q}"
            " --feature-cache {params.feature_cache} --external-tests {params.external:q}"
            " --record {output} --threads {threads}"
            " --runs-at-once {params.runs_at_once} > {log} 2>&1"
