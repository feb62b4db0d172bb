# Calibration-seed runs (config `seeds`): the same cells pruned on other calibration draws, to
# measure the spread a calibration sample causes. Stored under {results}/seeds/, never in place
# of the grid's own (seed `calibration.seed`) runs. Perplexity and KL only.


rule calib_seed:
    output:
        "work/calib-seeds/{model}/seed-{seed}.safetensors",
    params:
        py=PY,
        config=lambda wc: SEED_CONFIGS[int(wc.seed)],
    log:
        "logs/calib_seed/{model}/seed-{seed}.log",
    resources:
        gpu=0,
        mem_mb=RES("calib", "mem_mb"),
        runtime=RES("calib", "runtime"),
    conda:
        "envs/prunebench.yaml"
    shell:
        "{params.py:q} -m bench calib --model {wildcards.model:q} --config {params.config:q} "
        "--out {output:q} > {log:q} 2>&1"


rule prune_seed:
    input:
        # the draw's ids, only for runs not yet in results/ (as prune_inputs does for the grid):
        # a fresh clone must not redo committed seed runs because this cache is missing
        lambda wc: seed_inputs(f"{RESULTS}/seeds/{wc.model}/{wc.method}/{wc.pattern}/seed-{wc.seed}.json",
                               wc.model, wc.seed, CFG["zoo"]),
    output:
        temp(directory("work/pruned-seeds/{model}/{method}/{pattern}/seed-{seed}")),
    params:
        py=PY,
        config=lambda wc: SEED_CONFIGS[int(wc.seed)],
        method=lambda wc: json.dumps(CFG["methods"][wc.method], sort_keys=True),
        engine=json.dumps(CFG["engine"], sort_keys=True),
        calib=lambda wc: f"work/calib-seeds/{wc.model}/seed-{wc.seed}.safetensors",
    log:
        "logs/prune_seed/{model}/{method}/{pattern}/seed-{seed}.log",
    benchmark:
        "work/benchmarks/prune_seed/{model}/{method}/{pattern}/seed-{seed}.tsv"
    threads: lambda wc: job_threads(wc.method, wc.pattern, JOB_THREADS, CORES)
    resources:
        gpu=RES("prune", "gpu"),
        mem_mb=RES("prune", "mem_mb"),
        runtime=RES("prune", "runtime"),
    conda:
        "envs/prunebench.yaml"
    shell:
        "(test -f {params.calib:q} || {params.py:q} -m bench calib --model {wildcards.model:q} "
        "--config {params.config:q} --out {params.calib:q}) > {log:q} 2>&1 && "
        "{params.py:q} -m bench prune --model {wildcards.model:q} --method {wildcards.method:q} "
        "--pattern {wildcards.pattern:q} --calib {params.calib:q} --out {output:q} "
        "--config {params.config:q} --quiet >> {log:q} 2>&1"


rule evaluate_seed:
    input:
        "work/pruned-seeds/{model}/{method}/{pattern}/seed-{seed}",
    output:
        run=f"{RESULTS}/seeds/{{model}}/{{method}}/{{pattern}}/seed-{{seed}}.json",
        examples=f"{RESULTS}/seeds/{{model}}/{{method}}/{{pattern}}/seed-{{seed}}.examples.json.gz",
    params:
        py=PY,
        config=lambda wc: SEED_CONFIGS[int(wc.seed)],
        protocol=json.dumps(CFG["evaluation"]["ppl"], sort_keys=True),
    log:
        "logs/evaluate_seed/{model}/{method}/{pattern}/seed-{seed}.log",
    threads: lambda wc: job_threads(wc.method, wc.pattern, JOB_THREADS, CORES)
    priority: 20
    resources:
        gpu=RES("evaluate", "gpu"),
        mem_mb=RES("evaluate", "mem_mb"),
        runtime=RES("evaluate", "runtime"),
    conda:
        "envs/prunebench.yaml"
    shell:
        "{params.py:q} -m bench evaluate --checkpoint {input:q} --out {output.run:q} "
        "--config {params.config:q} --quiet > {log:q} 2>&1"
