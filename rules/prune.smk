# Prune and evaluate: one job each per (model, method, pattern) of the plan.


rule prune:
    input:
        # caches only for runs not yet in results/ (bench/workflow.py: prune_inputs)
        lambda wc: prune_inputs(wc.model, wc.method,
                                f"{RESULTS}/runs/{wc.model}/{wc.method}/{wc.pattern}.json",
                                CFG["zoo"]),
    output:
        (directory if CFG["keep_checkpoints"] else lambda p: temp(directory(p)))(
            "work/pruned/{model}/{method}/{pattern}"
        ),
    params:
        py=PY,
        config=CONFIG_JSON,
        method=lambda wc: json.dumps(CFG["methods"][wc.method], sort_keys=True),
        engine=json.dumps(CFG["engine"], sort_keys=True),
        calibration=json.dumps(CFG["calibration"], sort_keys=True),
    log:
        "logs/prune/{model}/{method}/{pattern}.log",
    benchmark:
        "work/benchmarks/prune/{model}/{method}/{pattern}.tsv"
    threads: lambda wc: job_threads(wc.method, wc.pattern, JOB_THREADS, CORES)
    resources:
        gpu=RES("prune", "gpu"),
        mem_mb=RES("prune", "mem_mb"),
        runtime=RES("prune", "runtime"),
    conda:
        "envs/prunebench.yaml"
    shell:
        "{params.py:q} -m bench prune --model {wildcards.model:q} --method {wildcards.method:q} "
        "--pattern {wildcards.pattern:q} --out {output:q} --config {params.config:q} --quiet > {log:q} 2>&1"


rule zeroshot:
    # zero-shot accuracy (lm-eval) of the pruned checkpoint; only when the config asks for it
    input:
        "work/pruned/{model}/{method}/{pattern}",
    output:
        "work/zeroshot/{model}/{method}/{pattern}.json",
    params:
        py=PY,
        config=CONFIG_JSON,
        protocol=json.dumps(CFG["evaluation"].get("zeroshot"), sort_keys=True),
    log:
        "logs/zeroshot/{model}/{method}/{pattern}.log",
    benchmark:
        "work/benchmarks/zeroshot/{model}/{method}/{pattern}.tsv"
    threads: CORES
    # finish a run (zeroshot, evaluate) before pruning the next: an interrupted grid leaves
    # whole runs behind, not a pile of temporary checkpoints
    priority: 10
    resources:
        gpu=RES("zeroshot", "gpu"),
        mem_mb=RES("zeroshot", "mem_mb"),
        runtime=RES("zeroshot", "runtime"),
    conda:
        "envs/prunebench.yaml"
    shell:
        "{params.py:q} -m bench zeroshot --checkpoint {input:q} --out {output:q} "
        "--config {params.config:q} > {log:q} 2>&1"


rule evaluate:
    input:
        ckpt="work/pruned/{model}/{method}/{pattern}",
        zeroshot=lambda wc: ([f"work/zeroshot/{wc.model}/{wc.method}/{wc.pattern}.json"]
                             if CFG["evaluation"].get("zeroshot") else []),
    output:
        # the run JSON and its per-example records (bench/evaluation/examples.py), published together
        run=f"{RESULTS}/runs/{{model}}/{{method}}/{{pattern}}.json",
        examples=f"{RESULTS}/runs/{{model}}/{{method}}/{{pattern}}.examples.json.gz",
    params:
        py=PY,
        config=CONFIG_JSON,
        protocol=json.dumps(CFG["evaluation"], sort_keys=True),
        zeroshot=lambda wc, input: ["--zeroshot", input.zeroshot[0]] if input.zeroshot else [],
    log:
        "logs/evaluate/{model}/{method}/{pattern}.log",
    benchmark:
        "work/benchmarks/evaluate/{model}/{method}/{pattern}.tsv"
    threads: lambda wc: job_threads(wc.method, wc.pattern, JOB_THREADS, CORES)
    priority: 20
    resources:
        gpu=RES("evaluate", "gpu"),
        mem_mb=RES("evaluate", "mem_mb"),
        runtime=RES("evaluate", "runtime"),
    conda:
        "envs/prunebench.yaml"
    shell:
        "{params.py:q} -m bench evaluate --checkpoint {input.ckpt:q} --out {output.run:q} "
        "--config {params.config:q} --quiet {params.zeroshot:q} > {log:q} 2>&1"
