localrules:
    download_dataset,
    verify,
    split,


rule download_dataset:
    """Download a Kaggle dataset into its root on the login node (only if absent)."""
    output:
        "resources/downloads/{dataset}.json",
    log:
        "logs/{dataset}/download.log",
    conda:
        "../../envs/data.yaml"
    params:
        slug=lambda w: config["datasets"][w.dataset]["kaggle"]["dataset"],
        subfolder=lambda w: config["datasets"][w.dataset]["kaggle"].get("subfolder", ""),
        root=dataset_root,
        manifest=dataset_manifest,
    shell:
        "python -m scripts download-kaggle --slug {params.slug} --subfolder {params.subfolder:q}"
        " --root {params.root:q} --manifest {params.manifest:q} --marker {output} > {log} 2>&1"


rule verify:
    """Recompute every image's SHA256 against the manifest before anything trains."""
    input:
        manifest=manifest_input,
        download=kaggle_marker,
    output:
        index="results/{dataset}/data/index.csv",
        report="results/{dataset}/data/verify.json",
    log:
        "logs/{dataset}/verify.log",
    conda:
        "../../envs/data.yaml"
    params:
        root=dataset_root,
        manifest=dataset_manifest,
        listing=dataset_listing,
        leakage=config["data"]["leakage"],
    shell:
        "python -m scripts verify --dataset {wildcards.dataset} --root {params.root:q}"
        " --manifest {params.manifest:q} --leakage {params.leakage}"
        " --index {output.index} --report {output.report} > {log} 2>&1"


rule prepare_images:
    """Decode, convert and resize every verified image once per image size."""
    input:
        index="results/{dataset}/data/index.csv",
    output:
        images="results/{dataset}/data/images_{size}px.npy",
        conversions="results/{dataset}/data/conversions_{size}px.json",
    log:
        "logs/{dataset}/prepare_images_{size}px.log",
    conda:
        "../../envs/data.yaml"
    threads: 2
    params:
        root=dataset_root,
    shell:
        "python -m scripts prepare --root {params.root:q} --index {input.index} --image-size {wildcards.size}"
        " --images {output.images} --conversions {output.conversions} > {log} 2>&1"


rule split:
    """Seeded, stratified validation split from train (or the dataset's own val/)."""
    input:
        index="results/{dataset}/data/index.csv",
    output:
        "results/{dataset}/splits/seed{seed}.csv",
    log:
        "logs/{dataset}/split_seed{seed}.log",
    conda:
        "../../envs/data.yaml"
    params:
        val_fraction=config["data"]["val_fraction"],
        leakage=config["data"]["leakage"],
    shell:
        "python -m scripts split --index {input.index} --seed {wildcards.seed}"
        " --val-fraction {params.val_fraction} --leakage {params.leakage}"
        " --output {output} > {log} 2>&1"
