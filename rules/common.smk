# Threads and cluster resources of every job. CORES: how many threads an every-core job takes
# (CPU jobs take them all unless the config pins engine.threads; tiny models: 1 -> parallel jobs).
from snakemake.exceptions import WorkflowError


def _cores():
    """--cores of a local run. On a cluster (the submitting process and the job itself, which
    runs with --cores all) every-core rules take engine.threads, else 8, so that sbatch's
    allocation and the job's own thread count agree."""
    if workflow.non_local_exec or workflow.remote_exec:
        return None
    try:
        return workflow.cores
    except WorkflowError:
        return None


CORES = _cores() or CFG["engine"]["threads"] or 8
JOB_THREADS = min(CFG["engine"]["threads"] or CORES, CORES)


def RES(rule, key):
    """A job's cluster resource (gpu, mem_mb, runtime minutes) from its model's size and the
    config (bench.workflow.job_resources); a profile's set-resources overrides it."""
    return lambda wc: job_resources(rule, getattr(wc, "model", None) or getattr(wc, "target", None),
                                    CFG, getattr(wc, "method", None))[key]
