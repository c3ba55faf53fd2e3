rule train:
    """Fit one dataset x model x strategy x seed run (resuming from its checkpoint),
    then evaluate it on the test set with Grad-CAM in the same process."""
    input:
        images=images_cache,
        split="results/{dataset}/splits/seed{seed}.csv",
        verified="results/{dataset}/data/verify.json",
        weights=weights_input,
    output:
        model=f"{RUN_DIR}/model.weights.h5",
        history=f"{RUN_DIR}/history.csv",
        info=f"{RUN_DIR}/train.json",
        predictions=f"{RUN_DIR}/predictions.csv",
        metrics=f"{RUN_DIR}/metrics.json",
        gradcam=f"{RUN_DIR}/gradcam.npz",
    log:
        "logs/{dataset}/{model}/{strategy}/seed{seed}/train.log",
    conda:
        "../../envs/tensorflow.yaml"
    # One thread: on small CPU hosts two single-threaded jobs beat one two-threaded
    # job (graph tracing is single-threaded); GPU profiles raise it with set-threads.
    threads: 1
    params:
        run_dir=run_dir,
        settings=run_settings,
        weights=run_weights,
    shell:
        "python -m scripts train --images {input.images} --split {input.split} --run-dir {params.run_dir}"
        " --settings {params.settings:q} --weights {params.weights:q} --threads {threads}"
        " > {log} 2>&1"
