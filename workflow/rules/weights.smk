localrules:
    fetch_weights,


rule fetch_weights:
    """Download ImageNet weights on the login node (compute nodes are offline)."""
    output:
        f"{config['weights_cache']}/{{file_name}}",
    log:
        "logs/weights/{file_name}.log",
    conda:
        "../../envs/data.yaml"
    params:
        url=lambda w: registry_entry(w)["url"],
        md5=lambda w: registry_entry(w)["md5"],
    shell:
        "python -m scripts fetch-weights --url {params.url:q} --md5 {params.md5} --output {output:q}"
        " > {log} 2>&1"
