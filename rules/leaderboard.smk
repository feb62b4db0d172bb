# The leaderboard: a pure function of the run and speed JSONs under the results directory.


rule site:
    input:
        RUN_FILES,
        SEED_FILES,
        SPEED_FILES,
    output:
        f"{SITE}/index.html",
    params:
        py=PY,
        results=lambda wc: RESULTS,
        site=lambda wc, output: os.path.dirname(output[0]),
    log:
        "logs/leaderboard.log",
    conda:
        "envs/prunebench.yaml"
    shell:
        "{params.py:q} -m bench leaderboard --results {params.results:q} --out {params.site:q} > {log:q} 2>&1"
