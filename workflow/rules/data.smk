localrules:
    download_dataset,
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
        subfolder=lambda w: config["datasets"][w.dataset]["kaggle"]["subfolder"],
        root=STUDY.dataset_root,
        manifest=STUDY.dataset_manifest,
    shell:
        "python -m scripts download-kaggle --slug {params.slug} --subfolder {params.subfolder:q}"
        " --root {params.root:q} --manifest {params.manifest:q} --marker {output} > {log} 2>&1"


rule verify:
    """Recompute every image's SHA256 against the manifest before anything trains;
    each image's group (patient) from the dataset's groups setting."""
    input:
        manifest=STUDY.manifest_input,
        download=STUDY.kaggle_marker,
        group_table=STUDY.group_table,
    output:
        index=DATASET_FILES["index"],
        report=DATASET_FILES["verify"],
    log:
        "logs/{dataset}/verify.log",
    localrule: on_login_node("verify")
    conda:
        "../../envs/data.yaml"
    params:
        root=STUDY.dataset_root,
        manifest=STUDY.dataset_manifest,
        listing=STUDY.dataset_listing,
        leakage=config["data"]["leakage"],
        positive_class=STUDY.positive_class,
        groups=STUDY.dataset_groups,
    shell:
        "python -m scripts verify --dataset {wildcards.dataset} --root {params.root:q}"
        " --manifest {params.manifest:q} --leakage {params.leakage}"
        " --positive-class={params.positive_class:q} --groups {params.groups:q}"
        " --index {output.index} --report {output.report} > {log} 2>&1"


rule prepare_images:
    """Decode, convert and resize every verified image once per image size; measure
    each image's colour content (burned-in overlays are a shortcut)."""
    input:
        index=DATASET_FILES["index"],
    output:
        images=DATASET_FILES["images"],
        conversions=DATASET_FILES["conversions"],
    log:
        "logs/{dataset}/prepare_images_{size}px.log",
    conda:
        "../../envs/data.yaml"
    threads: 2
    params:
        root=STUDY.dataset_root,
        colour=STUDY.colour_settings,
    shell:
        "python -m scripts prepare --root {params.root:q} --index {input.index} --image-size {wildcards.size}"
        " --colour {params.colour:q} --images {output.images} --conversions {output.conversions} > {log} 2>&1"


rule thumbnails:
    """The test images at display size, for the report's Grad-CAM panels."""
    input:
        index=DATASET_FILES["index"],
    output:
        DATASET_FILES["thumbnails"],
    log:
        "logs/{dataset}/thumbnails.log",
    localrule: on_login_node("thumbnails")
    conda:
        "../../envs/data.yaml"
    params:
        root=STUDY.dataset_root,
    shell:
        "python -m scripts thumbnails --root {params.root:q} --index {input.index}"
        " --output {output} > {log} 2>&1"


rule leakage:
    """Which test images are copies of a training or validation image: byte-identical,
    or the same radiograph re-encoded, cropped, shifted, rotated, mirrored or inverted
    (near-duplicates that byte hashes miss); and the near-copies within the training pool
    and within the test set."""
    input:
        index=DATASET_FILES["index"],
    output:
        leakage=DATASET_FILES["leakage"],
        copies=DATASET_FILES["copies"],
    log:
        "logs/{dataset}/leakage.log",
    localrule: on_login_node("leakage")
    conda:
        "../../envs/data.yaml"
    params:
        root=STUDY.dataset_root,
        policy=config["data"]["leakage"],
    shell:
        "python -m scripts leakage --root {params.root:q} --index {input.index}"
        " --policy {params.policy} --output {output.leakage} --copies {output.copies}"
        " > {log} 2>&1"


rule split:
    """Seeded, stratified validation split from train (or the dataset's own val/), and
    each training image's rank for the nested training-fraction subsets."""
    input:
        index=DATASET_FILES["index"],
        leakage=DATASET_FILES["leakage"],
        copies=DATASET_FILES["copies"],
    output:
        SPLIT,
    log:
        "logs/{dataset}/split_seed{seed}.log",
    conda:
        "../../envs/data.yaml"
    params:
        data=STUDY.split_settings,
    shell:
        "python -m scripts split --index {input.index} --leakage-table {input.leakage}"
        " --copies {input.copies}"
        " --seed {wildcards.seed}"
        " --settings {params.data:q} --output {output} > {log} 2>&1"


rule external_overlap:
    """Which test images of an external dataset are the same radiograph as an image of
    the trained dataset (re-encoded copies that byte hashes miss): not external data."""
    input:
        index=DATASET_FILES["index"],
        external_index=STUDY.external_index,
    output:
        EXTERNAL_OVERLAP,
    log:
        "logs/{dataset}/external_overlap_{external}.log",
    localrule: on_login_node("external_overlap")
    conda:
        "../../envs/data.yaml"
    params:
        root=STUDY.dataset_root,
        external_root=STUDY.external_root,
    shell:
        "python -m scripts external-overlap --root {params.root:q} --index {input.index}"
        " --external-root {params.external_root:q} --external-index {input.external_index}"
        " --output {output} > {log} 2>&1"
