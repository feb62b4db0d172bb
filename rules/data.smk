# Data rules: fetch/convert/build each model once, sample its calibration ids once.


rule train_tiny:
    output:
        f"{workflow.basedir}/zoo/{{tiny}}/model.safetensors",
    params:
        py=PY,
        # a list: `:q` quotes each argument of the recipe on its own
        recipe=lambda wc: shlex.split(train_recipe(f"{workflow.basedir}/zoo/{wc.tiny}", CFG["zoo"])),
        out=lambda wc, output: os.path.dirname(output[0]),
    log:
        "logs/train/{tiny}.log",
    benchmark:
        "work/benchmarks/train/{tiny}.tsv"
    threads: CORES
    resources:
        gpu=RES("train_tiny", "gpu"),
        mem_mb=RES("train_tiny", "mem_mb"),
        runtime=RES("train_tiny", "runtime"),
    conda:
        "envs/prunebench.yaml"
    shell:
        "{params.py:q} -m bench train {params.recipe:q} --out {params.out:q} > {log:q} 2>&1"


rule prepare:
    input:
        # ancient: a fresh clone (all mtimes equal) must not redo runs of committed weights
        lambda wc: [ancient(p) for p in prepare_inputs(wc.model, CFG["zoo"])],
    output:
        "work/prepared/{model}.json",
    params:
        py=PY,
        config=CONFIG_JSON,
    log:
        "logs/prepare/{model}.log",
    benchmark:
        "work/benchmarks/prepare/{model}.tsv"
    threads: CORES
    resources:
        gpu=RES("prepare", "gpu"),
        mem_mb=RES("prepare", "mem_mb"),
        runtime=RES("prepare", "runtime"),
    conda:
        "envs/prunebench.yaml"
    shell:
        "{params.py:q} -m bench prepare --model {wildcards.model:q} --config {params.config:q} "
        "--out {output:q} > {log:q} 2>&1"


rule calib:
    input:
        "work/prepared/{model}.json",
    output:
        "work/calib/{model}.safetensors",
    params:
        py=PY,
        config=CONFIG_JSON,
        protocol=json.dumps(CFG["calibration"], sort_keys=True),
    log:
        "logs/calib/{model}.log",
    benchmark:
        "work/benchmarks/calib/{model}.tsv"
    resources:
        gpu=RES("calib", "gpu"),
        mem_mb=RES("calib", "mem_mb"),
        runtime=RES("calib", "runtime"),
    conda:
        "envs/prunebench.yaml"
    shell:
        "{params.py:q} -m bench calib --model {wildcards.model:q} --config {params.config:q} "
        "--out {output:q} > {log:q} 2>&1"


rule level_db:
    # DarwinLM's level database: consumer Hessians + OBS removal orders, once per model
    input:
        "work/prepared/{model}.json",
        "work/calib/{model}.safetensors",
    output:
        "work/darwinlm/{model}.safetensors",
    params:
        py=PY,
        config=CONFIG_JSON,
        percdamp=json.dumps(CFG["methods"].get("darwinlm", {}).get("percdamp", 0.01)),
    log:
        "logs/level_db/{model}.log",
    benchmark:
        "work/benchmarks/level_db/{model}.tsv"
    threads: CORES
    resources:
        gpu=RES("level_db", "gpu"),
        mem_mb=RES("level_db", "mem_mb"),
        runtime=RES("level_db", "runtime"),
    conda:
        "envs/prunebench.yaml"
    shell:
        "{params.py:q} -m bench level-db --model {wildcards.model:q} --config {params.config:q} "
        "--out {output:q} --quiet > {log:q} 2>&1"


# a committed run made under another BOS rule than its model's tokenizer gives: this marker is
# an input of its prune job, so the run is made again (bench/workflow.py: refresh_inputs)
rule refresh:
    output:
        "work/refresh/{run}.bos",
    log:
        "logs/refresh/{run}.log",
    wildcard_constraints:
        run=r"[A-Za-z0-9_./-]+\.json",
    run:
        write_refresh_marker(output[0])
