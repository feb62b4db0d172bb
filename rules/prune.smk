# Prune and evaluate: one job each per (model, method, pattern) of the plan.


rule prune:
    input:
        lambda wc: prune_inputs(wc.model, wc.method),
    output:
        (directory if CFG["keep_checkpoints"] else lambda p: temp(directory(p)))(
            "work/pruned/{model}/{method}/{pattern}"
        ),
    params:
        py=PY,
        config=CONFIG_JSON,
        method=lambda wc: json.dumps(CFG["methods"][wc.method], sort_keys=True),
        engine=json.dumps(CFG["engine"], sort_keys=True),
    log:
        "logs/prune/{model}/{method}/{pattern}.log",
    benchmark:
        "work/benchmarks/prune/{model}/{method}/{pattern}.tsv"
    threads: lambda wc: job_threads(wc.method, wc.pattern, JOB_THREADS, workflow.cores)
    resources:
        gpu=0,
    conda:
        "envs/prunebench.yaml"
    shell:
        "{params.py} -m bench prune --model {wildcards.model} --method {wildcards.method} "
        "--pattern {wildcards.pattern} --out {output} --config {params.config} --quiet > {log} 2>&1"


rule evaluate:
    input:
        "work/pruned/{model}/{method}/{pattern}",
    output:
        f"{RESULTS}/runs/{{model}}/{{method}}/{{pattern}}.json",
    params:
        py=PY,
        config=CONFIG_JSON,
        protocol=json.dumps(CFG["evaluation"], sort_keys=True),
    log:
        "logs/evaluate/{model}/{method}/{pattern}.log",
    benchmark:
        "work/benchmarks/evaluate/{model}/{method}/{pattern}.tsv"
    threads: lambda wc: job_threads(wc.method, wc.pattern, JOB_THREADS, workflow.cores)
    resources:
        gpu=0,
    conda:
        "envs/prunebench.yaml"
    shell:
        "{params.py} -m bench evaluate --checkpoint {input} --out {output} "
        "--config {params.config} --quiet > {log} 2>&1"
