# PruneBench workflow: models x methods x patterns -> results/runs/*.json -> site/_build/.
#
# Run:   snakemake --cores 2                          (default grid, config/config.yaml)
#        snakemake --cores 2 --configfile config/smoke.yaml   (minutes; CI)
#        snakemake --cores 1 site                     (only rebuild the leaderboard from results/)
# Paths:
#   zoo/{model}/model.safetensors               weights of a model trained here (rule train_tiny)
#   work/prepared/{model}.json                  model fetched/converted/built once (work/models/)
#   work/calib/{model}.safetensors              calibration token ids, shared by every method
#   work/pruned/{model}/{method}/{pattern}/     pruned checkpoint (temp unless keep_checkpoints)
#   {results_dir}/runs/{model}/{method}/{pattern}.json   one versioned run JSON (committed)
#   {results_dir}/runs/{model}/{method}/{pattern}.examples.json.gz   its per-example records
#   {results_dir}/seeds/{model}/{method}/{pattern}/seed-{s}.json   calibration-seed runs (config seeds)
#   {results_dir}/speed/{target}.json           2:4 kernel speed of a model / paper config (GPU)
#   {site_dir}/index.html                       the leaderboard (a pure function of results/)
#   logs/, work/benchmarks/                     per-job logs and Snakemake benchmarks
# The config is validated against config/schema.yaml before any job runs; combinations a
# method cannot do are dropped here with a message, never left to fail as jobs.
import json
import os
import shlex
import sys
from pathlib import Path

sys.path.insert(0, workflow.basedir)
from bench.config import load_config, plan, seed_runs, with_seed  # noqa: E402
from bench.speed.speed_run import targets as speed_targets  # noqa: E402
from bench.workflow import (  # noqa: E402
    grid_configfile, job_resources, job_threads, method_source, pin_work_dirs, prepare_inputs,
    prune_inputs, seed_inputs, site_sources, train_recipe, write_effective_config,
    write_refresh_marker)

if not config:
    configfile: "config/config.yaml"

CFG = load_config(dict(config))
RUNS, DROPPED = plan(CFG)
if DROPPED:  # layer-wise x structured and structured x N:M combinations, by design
    sys.stderr.write(f"PruneBench: {len(DROPPED)} model/method/pattern combinations dropped "
                     f"(a method cannot do the pattern, or a model license is not accepted); "
                     "`python -m bench plan` lists them\n")

# Every job keeps its caches in THIS working directory's work/ (the rules' outputs), also under
# --directory, so the `python -m bench` commands the rules run are pointed at it. Downloaded
# wheels (pinned, immutable) are shared with the checkout's work/wheels.
WORK = pin_work_dirs(os.path.abspath("work"), os.path.join(workflow.basedir, "work", "wheels"))

CONFIG_JSON = write_effective_config(CFG)
SEED_RUNS = seed_runs(CFG, RUNS)
SEED_CONFIGS = {s: write_effective_config(with_seed(CFG, s)) for s in sorted({r.seed for r in SEED_RUNS})}

RESULTS = CFG["results_dir"]
# the config file these results come from, as a clone names it (run pages' reproduce commands)
GRID_CONFIG = grid_configfile(workflow.configfiles, workflow.basedir)
SITE = CFG["site_dir"]
PY = sys.executable

include: "rules/common.smk"

RUN_FILES = [f"{RESULTS}/runs/{r.model}/{r.method}/{r.pattern}{ext}" for r in RUNS
             for ext in (".json", ".examples.json.gz")]
SPEED_FILES = [f"{RESULTS}/speed/{t}.json" for t in speed_targets(CFG)]
SEED_FILES = [f"{RESULTS}/{r.stem}{ext}" for r in SEED_RUNS for ext in (".json", ".examples.json.gz")]
CARD_FILES = [f"{RESULTS}/methods/{m}.json" for m in sorted({r.method for r in RUNS})]
# what else the site reads: the CUDA check records, templates, assets and docs/protocol.md
SITE_SOURCES = site_sources(RESULTS, workflow.basedir)

# the names a path segment may take (model keys and methods as the config schema and the
# registry allow them, canonical pattern slugs as methods.base.parse_pattern reads them)
wildcard_constraints:
    seed=r"\d+",
    model=r"[A-Za-z0-9_.-]+",
    target=r"[A-Za-z0-9_.-]+",
    method=r"[A-Za-z0-9_]+",
    pattern=r"dense|(un)?structured-[0-9.]+|[0-9]+of[0-9]+",

include: "rules/data.smk"
include: "rules/prune.smk"
include: "rules/seeds.smk"
include: "rules/speed.smk"
include: "rules/leaderboard.smk"


rule all:
    input:
        RUN_FILES,
        SEED_FILES,
        SPEED_FILES,
        f"{SITE}/index.html",
    default_target: True
