"""Shared command-line plumbing of the developer benchmarks (bench/tools/noise_floor.py,
bench/tools/layer_error.py, bench/tools/prune_speed.py): the common arguments and their setup.

Owns `parser` (--model, --pattern, --config, --out with the benchmark's defaults) and `setup`
(logging, the validated config, the parsed pattern and the model's zoo spec), so each benchmark
states only what it measures.
"""
from __future__ import annotations

import argparse
import logging
from typing import Any

from bench.config import load_config
from bench.zoo import spec_for
from methods.base import Pattern, parse_pattern


def parser(doc: str, model: str = "smollm2-135m", pattern: str = "2of4") -> argparse.ArgumentParser:
    """An argument parser with the arguments every benchmark takes (its first doc line as help)."""
    p = argparse.ArgumentParser(description=doc.splitlines()[0])
    p.add_argument("--model", default=model)
    p.add_argument("--pattern", default=pattern)
    p.add_argument("--config", default=None)
    p.add_argument("--out", default=None)
    return p


def setup(args: argparse.Namespace) -> tuple[dict[str, Any], Pattern, Any]:
    """Logging on; (config, pattern, zoo spec of --model), all validated before any work."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    cfg = load_config(args.config)
    return cfg, parse_pattern(args.pattern), spec_for(cfg, args.model)
