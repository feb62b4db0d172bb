# 2:4 kernel speed: one job per grid model and paper-scale config (bench/speed/speed_run.py). Without a
# GPU the job records "no GPU" and the plan; on a GPU machine re-run it with `-R speed`.


rule speed:
    input:
        # the prepared model only for a record not yet made (as prune_inputs, bench/workflow.py)
        lambda wc: ([f"work/prepared/{wc.target}.json"] if wc.target in CFG["models"]
                    and not os.path.exists(f"{RESULTS}/speed/{wc.target}.json") else []),
    output:
        f"{RESULTS}/speed/{{target}}.json",
    params:
        py=PY,
        config=CONFIG_JSON,
        protocol=json.dumps(CFG.get("speed"), sort_keys=True),
    log:
        "logs/speed/{target}.log",
    benchmark:
        "work/benchmarks/speed/{target}.tsv"
    threads: CORES
    resources:
        gpu=RES("speed", "gpu"),
        mem_mb=RES("speed", "mem_mb"),
        runtime=RES("speed", "runtime"),
    conda:
        "envs/prunebench.yaml"
    shell:
        "{params.py:q} -m bench speed --target {wildcards.target:q} --out {output:q} "
        "--config {params.config:q} --quiet > {log:q} 2>&1"
