# The leaderboard: a pure function of the run and speed JSONs under the results directory.


rule method_card:
    # what the site says about a method (bench/board/method_cards.py), refreshed when its source changes
    input:
        lambda wc: method_source(wc.method),
    output:
        f"{RESULTS}/methods/{{method}}.json",
    params:
        py=PY,
    log:
        "logs/method_card/{method}.log",
    conda:
        "envs/prunebench.yaml"
    shell:
        "{params.py:q} -m bench method-card {wildcards.method:q} --out {output:q} > {log:q} 2>&1"


rule site:
    input:
        RUN_FILES,
        SEED_FILES,
        SPEED_FILES,
        CARD_FILES,
        SITE_SOURCES,
    output:
        f"{SITE}/index.html",
    params:
        py=PY,
        results=lambda wc: RESULTS,
        site=lambda wc, output: os.path.dirname(output[0]),
        configfile=GRID_CONFIG,
    log:
        "logs/leaderboard.log",
    conda:
        "envs/prunebench.yaml"
    shell:
        "{params.py:q} -m bench leaderboard --results {params.results:q} --out {params.site:q} "
        "--configfile {params.configfile:q} > {log:q} 2>&1"
