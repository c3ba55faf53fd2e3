rule train:
    """Fit and evaluate the runs of one pack (seeds of one configuration; one seed per
    pack under profiles/local, runs_per_job under the Slurm profile) in one job,
    runs_at_once of them side by side: each resumes from its checkpoint, then is
    evaluated on the validation and test sets with Grad-CAM and on every external test
    set. Every run writes its own files, log and checkpoint; the pack's record, the job's
    only output, comes once all finished. A failed run leaves its siblings' files in place
    (they are no output of the job), and the pack's next job skips the runs that
    finished. Pack membership depends on the config alone, so job names stay the same
    from one invocation to the next."""
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
        # Snakemake's attempt (1 + the retries so far; sbatch gets no such flag): a retry
        # after a failure that no retry can fix stops at once (params.failure).
        attempt=lambda wildcards, attempt: attempt,
    params:
        settings=STUDY.run_settings,
        members=STUDY.pack_members,
        runs_at_once=PACKING["runs_at_once"],
        feature_cache=FEATURE_CACHE,
        external=STUDY.external_settings,
        # Snakemake deletes the declared log before every attempt: every attempt's
        # output is also appended here, after a header naming the attempt and the time.
        attempts=f"{PACK_LOG_DIR}/attempts.log",
        # Written by an attempt that failed in a way no retry can fix (the device, bad
        # data); the next attempt reads it and stops at once.
        failure=f"{PACK_LOG_DIR}/failure.json",
    shell:
        "{{ echo \"== attempt $(( $(grep -c '^== attempt ' {params.attempts} 2>/dev/null || :) + 1 ))"
        ' $(date -Iseconds) ==";'
        " python -m scripts train-pack --dataset {wildcards.dataset} --model {wildcards.model}"
        " --strategy {wildcards.strategy} --weights-name {wildcards.weights}"
        " --fraction {wildcards.fraction} --images {input.images}"
        " --settings {params.settings:q} --members {params.members:q}"
        " --feature-cache {params.feature_cache} --external-tests {params.external:q}"
        " --record {output} --threads {threads}"
        " --runs-at-once {params.runs_at_once} --attempt {resources.attempt}"
        " --failure-record {params.failure}; }} 2>&1 | tee -a {params.attempts} > {log}"
