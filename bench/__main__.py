"""Command line: list | plan | prepare | calib | level-db | prune | zeroshot | evaluate | compare |
speed | method-card | leaderboard | new-method | train.

Owns argument parsing and turning errors into one clear line: a user's error (bad input, a
disk full or read-only, a foreign or corrupt file) exits with 2, a bug with 1; `--debug`
anywhere on the line shows the traceback. SIGTERM unwinds like Ctrl-C, so no temporary or
lock is left behind. All work is done by importable functions (bench.pipeline,
bench.board.leaderboard, bench.train).
"""
from __future__ import annotations

import _thread
import argparse
import json
import logging
import signal
import sys
import threading
from pathlib import Path
from types import FrameType
from typing import Any

log = logging.getLogger("bench")


def _cmd_list(args: argparse.Namespace) -> None:
    from bench.adapters import ADAPTERS
    from bench.zoo import load_zoo
    from methods import registry
    from methods.base import PATTERN_FORMS

    zoo = load_zoo(Path(args.zoo) if args.zoo else None)
    out = ["models:"]
    for key, spec in zoo.items():
        tag = " [trained here]" if spec.trained_here else ""
        out.append(f"  {key:<16} {spec.arch:<6} {spec.source.get('kind'):<10} {spec.description}{tag}")
    out.append("methods:")
    for name, cls in registry.available().items():
        out.append(f"  {name:<16} {cls.kind:<10} {cls.capabilities.describe()} "
                   f"[{registry.origin(name)}]")
        if cls.description:
            out.append(f"  {'':<16} {cls.description}")
    for name, err in registry.plugin_errors().items():
        out.append(f"  {name:<16} FAILED TO LOAD: {err}")
    out.append("patterns:")
    out.append("  dense, unstructured-P (P% of each prunable layer, e.g. unstructured-50),")
    out.append("  NofM (keep N of every M consecutive inputs, e.g. 2of4, 4of8),")
    out.append("  structured-P (P% of prunable parameters as whole heads/channels)")
    out.append(f"  forms: {', '.join(PATTERN_FORMS)}")
    out.append("architectures: " + ", ".join(sorted(ADAPTERS)))
    sys.stdout.write("\n".join(out) + "\n")


def _cmd_plan(args: argparse.Namespace) -> None:
    from bench.config import load_config, plan

    runs, dropped = plan(load_config(args.config))
    for run in runs:
        sys.stdout.write(run.id + "\n")
    for run, why in dropped:
        sys.stderr.write(f"dropped {run.id}: {why}\n")


def _cmd_prepare(args: argparse.Namespace) -> None:
    from bench import outputs
    from bench.zoo import models
    from bench.config import load_config
    from bench.zoo import model_provenance, spec_for

    cfg = load_config(args.config)
    spec = spec_for(cfg, args.model)
    if not args.out:
        sys.stdout.write(f"{models.prepare(spec)}\n")
        return
    with outputs.claim(Path(args.out), "--out", "file",
                       lambda p: outputs.json_object_with(p, ("key", "path"))) as claim:
        where = models.prepare(spec)
        marker = {"key": spec.key, "path": str(where), "provenance":
                  model_provenance(Path(where)) if isinstance(where, Path) else {}}
        claim.tmp.write_text(json.dumps(marker, indent=2, sort_keys=True) + "\n")
    sys.stdout.write(f"{where}\n")


def _cmd_calib(args: argparse.Namespace) -> None:
    from bench.data.calibration import make_calibration
    from bench.config import load_config

    make_calibration(args.model, load_config(args.config), Path(args.out) if args.out else None)


def _params(text: str | None) -> Any:
    """`--params` parsed as JSON, or a one-line error naming it."""
    from methods.base import PruneBenchError

    if text is None:
        return None
    try:
        params = json.loads(text)
    except json.JSONDecodeError as exc:
        raise PruneBenchError(f"--params is not valid JSON ({exc.msg} at character {exc.pos}): "
                              f"{text[:80]!r}") from None
    return params                       # a JSON object: checked by pipeline.check_params


def _cmd_prune(args: argparse.Namespace) -> None:
    from bench.pipeline import prune

    prune(args.model, args.method, args.pattern, Path(args.out), args.config, _params(args.params),
          Path(args.calib) if args.calib else None, progress=not args.quiet)


def _cmd_evaluate(args: argparse.Namespace) -> None:
    from bench.pipeline import evaluate

    path, run = evaluate(Path(args.checkpoint), Path(args.out) if args.out else None, args.config,
                         progress=not args.quiet, zeroshot=Path(args.zeroshot) if args.zeroshot else None)
    shown = {k: v for k, v in run["metrics"].items()          # per-task zero-shot: in the JSON
             if not k.startswith("zeroshot/") or k.startswith("zeroshot/average/")}
    sys.stdout.write(f"{path}: " + ", ".join(f"{k}={v:.4g}" for k, v in shown.items() if v is not None)
                     + f", sparsity={run['sparsity']['achieved']:.4f}\n")


def _cmd_level_db(args: argparse.Namespace) -> None:
    from bench.config import load_config
    from bench.structured_run import build_level_db

    path = build_level_db(args.model, load_config(args.config), Path(args.out) if args.out else None,
                          progress=not args.quiet)
    sys.stdout.write(f"{path}\n")


def _cmd_zeroshot(args: argparse.Namespace) -> None:
    from bench.evaluation.zeroshot import evaluate_checkpoint

    record = evaluate_checkpoint(Path(args.checkpoint), Path(args.out), args.config)
    avg = {k: v for k, v in record["metrics"].items() if k.startswith("zeroshot/average/")}
    sys.stdout.write(f"{args.out}: " + ", ".join(f"{k}={v:.4f}" for k, v in avg.items()
                                                  if v is not None) + "\n")


def _cmd_speed(args: argparse.Namespace) -> None:
    from bench.config import load_config
    from bench.speed.speed_run import run_target

    record = run_target(args.target, load_config(args.config), Path(args.out) if args.out else None,
                        progress=not args.quiet, weights=args.weights)
    what = (f"{len(record['layers'])} layer cells, {len(record['e2e'])} end-to-end"
            if record["status"] == "measured" else "no figures")
    sys.stdout.write(f"{args.target}: {record['reason'] or record['status']} ({what})\n")


def _cmd_compare(args: argparse.Namespace) -> None:
    from bench.board.compare import compare, table

    methods = args.methods.split(",") if args.methods else None
    for metric in args.metric or ["ppl", "kl", "zeroshot", "flips"]:
        sys.stdout.write(table(compare(Path(args.results), args.model, args.pattern, metric,
                                       methods)) + "\n\n")


def _cmd_method_card(args: argparse.Namespace) -> None:
    from bench.board.method_cards import card_path, write_card

    for name in args.method:
        sys.stdout.write(f"{write_card(name, Path(args.out) if args.out else card_path(Path(args.results), name))}\n")


def _cmd_leaderboard(args: argparse.Namespace) -> None:
    from bench.board.leaderboard import build_site

    index = build_site(Path(args.results), Path(args.out), args.configfile)
    sys.stdout.write(f"{index}\n")


def _cmd_new_method(args: argparse.Namespace) -> None:
    from bench.tools.scaffold import new_method

    method, test = new_method(args.name, args.kind)
    sys.stdout.write(f"{method}\n{test}\nnext: edit {method}, then\n"
                     f"  python -m pytest -q {test}\n"
                     f"  add '{args.name}: {{}}' under methods: in a grid config and run snakemake\n")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0],
                                epilog="--debug (anywhere): show the traceback of an error")
    p.add_argument("-v", "--verbose", action="store_true")
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("list", help="models, methods with capabilities, patterns")
    s.add_argument("--zoo", default=None)
    s.set_defaults(fn=_cmd_list)
    s = sub.add_parser("plan", help="the runs of a grid config (dropped ones on stderr)")
    s.add_argument("--config", default=None)
    s.set_defaults(fn=_cmd_plan)
    s = sub.add_parser("prepare", help="fetch/convert/build a zoo model once (cached in work/)")
    s.add_argument("--model", required=True)
    s.add_argument("--config", default=None)
    s.add_argument("--out", default=None, help="marker JSON to write when done")
    s.set_defaults(fn=_cmd_prepare)
    s = sub.add_parser("calib", help="sample and save a model's calibration token ids")
    s.add_argument("--model", required=True)
    s.add_argument("--config", default=None)
    s.add_argument("--out", default=None)
    s.set_defaults(fn=_cmd_calib)
    s = sub.add_parser("prune", help="prune a model; write a loadable checkpoint + prune.json")
    for a in ("--model", "--method", "--pattern", "--out"):
        s.add_argument(a, required=True)
    s.add_argument("--config", default=None)
    s.add_argument("--params", default=None, help='JSON hyperparameter overrides, e.g. \'{"blocksize": 64}\'')
    s.add_argument("--calib", default=None, help="calibration file (default work/calib/MODEL.safetensors)")
    s.add_argument("--quiet", action="store_true")
    s.set_defaults(fn=_cmd_prune)
    s = sub.add_parser("evaluate", help="perplexity + sparsity of a pruned checkpoint -> run JSON")
    s.add_argument("--checkpoint", required=True)
    s.add_argument("--out", default=None, help="default results/runs/MODEL/METHOD/PATTERN.json")
    s.add_argument("--config", default=None)
    s.add_argument("--quiet", action="store_true")
    s.add_argument("--zeroshot", default=None, help="zero-shot results of this checkpoint to merge")
    s.set_defaults(fn=_cmd_evaluate)
    s = sub.add_parser("zeroshot", help="zero-shot accuracy of a pruned checkpoint (lm-eval)")
    s.add_argument("--checkpoint", required=True)
    s.add_argument("--out", required=True)
    s.add_argument("--config", default=None)
    s.set_defaults(fn=_cmd_zeroshot)
    s = sub.add_parser("level-db", help="DarwinLM's level database of a model (cached in work/)")
    s.add_argument("--model", required=True)
    s.add_argument("--config", default=None)
    s.add_argument("--out", default=None, help="default work/darwinlm/MODEL.safetensors")
    s.add_argument("--quiet", action="store_true")
    s.set_defaults(fn=_cmd_level_db)
    s = sub.add_parser("speed", help="2:4 kernel speed of a model or paper-scale config (GPU)")
    s.add_argument("--target", required=True, help="a grid model or a paper config (llama-2-7b, ...)")
    s.add_argument("--config", default=None)
    s.add_argument("--out", default=None, help="default results/speed/TARGET.json")
    s.add_argument("--weights", choices=("real", "random"), default="real",
                   help="random: a grid model built from its config with seeded random weights "
                        "(same shapes, same kernel speed; for machines without the real weights)")
    s.add_argument("--quiet", action="store_true")
    s.set_defaults(fn=_cmd_speed)
    s = sub.add_parser("compare", help="every method at a model and pattern, with paired "
                                       "95%% intervals to dense and to the best, and ranks with ties")
    s.add_argument("--model", required=True)
    s.add_argument("--pattern", required=True)
    s.add_argument("--metric", action="append", choices=("ppl", "kl", "zeroshot", "acc_norm", "flips"),
                   help="repeat for several (default: ppl, kl, zeroshot, flips)")
    s.add_argument("--methods", default=None, help="comma-separated: compare and rank only these "
                   "(e.g. one training group, as the leaderboard does)")
    s.add_argument("--results", default="results")
    s.set_defaults(fn=_cmd_compare)
    s = sub.add_parser("method-card", help="snapshot a method's description, defaults and "
                                           "training tag into results/methods/ (read by the site)")
    s.add_argument("method", nargs="+")
    s.add_argument("--results", default="results")
    s.add_argument("--out", default=None, help="one method only: write its card here")
    s.set_defaults(fn=_cmd_method_card)
    s = sub.add_parser("leaderboard", help="build the static site from results/")
    s.add_argument("--results", default="results")
    s.add_argument("--out", default="site/_build")
    s.add_argument("--configfile", default="config/config.yaml",
                   help="the grid config the results came from (named in the reproduce commands)")
    s.set_defaults(fn=_cmd_leaderboard)
    s = sub.add_parser("new-method", help="write a ready-to-edit method file and its tests")
    s.add_argument("name", help="the method's name (a lowercase identifier, e.g. row_magnitude)")
    s.add_argument("--kind", choices=("layerwise", "model"), default="layerwise",
                   help="layerwise: one function per weight matrix; model: given the whole model")
    s.set_defaults(fn=_cmd_new_method)
    sub.add_parser("train", help="train a tiny zoo model: python -m bench train --help")
    return p


# errors a user can cause (bad input, a disk that is full or read-only, a foreign or corrupt
# file): one line and exit code 2; anything else is a bug: one line, exit code 1, --debug shows it
USER_ERRORS: tuple[type[BaseException], ...] = (ValueError, OSError, RuntimeError, KeyError,
                                                IndexError, TypeError)


def _safetensors_error() -> tuple[type[BaseException], ...]:
    try:
        from safetensors import SafetensorError
    except ImportError:  # an older safetensors: its errors are not a class of their own
        return ()
    return (SafetensorError,)


def _in_destructor(frame: FrameType | None) -> bool:
    while frame is not None:
        if frame.f_code.co_name == "__del__":
            return True
        frame = frame.f_back
    return False


def _stop(signum: int, frame: FrameType | None) -> None:
    """SIGINT (Ctrl-C) and SIGTERM (a killed Snakemake job, a cluster's time limit): unwind,
    so that temporaries and locks are removed; bench.outputs publishes nothing afterwards.
    Inside a destructor, where Python would print and swallow the exception, the signal is
    delivered again a moment later instead."""
    from bench import outputs

    outputs.note_signal(signum)
    if _in_destructor(frame):
        threading.Timer(0.01, _thread.interrupt_main, (signum,)).start()
        return
    if signum == signal.SIGINT:
        raise KeyboardInterrupt
    raise SystemExit(128 + signum)


def _one_line(exc: BaseException) -> str:
    msg = " ".join(str(exc).split()) or type(exc).__name__
    if isinstance(exc, OSError) and exc.filename is not None and str(exc.filename) not in msg:
        msg = f"{msg}: {exc.filename}"
    return msg


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    argv = [a for a in argv if a != "--debug"]
    if argv[:1] != ["train"]:
        args = build_parser().parse_args(argv)
        verbose = args.verbose
    else:
        args, verbose = None, False
    logging.basicConfig(level=logging.DEBUG if verbose or debug else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    handlers = ({sig: signal.signal(sig, _stop) for sig in (signal.SIGINT, signal.SIGTERM)}
                if threading.current_thread() is threading.main_thread() else {})
    try:
        if args is None:                      # everything after `train` belongs to bench.train
            from bench import train

            train.main(argv[1:])
        else:
            args.fn(args)
    except KeyboardInterrupt:
        sys.stderr.write("error: interrupted\n")
        return 130
    except USER_ERRORS + _safetensors_error() as exc:
        sys.stderr.write(f"error: {_one_line(exc)}\n")
        if debug:
            raise
        return 2
    except Exception as exc:  # noqa: BLE001 - a bug: still one line unless --debug
        sys.stderr.write(f"error: internal error, {type(exc).__name__}: {_one_line(exc)} "
                         f"(run again with --debug for the traceback)\n")
        if debug:
            raise
        return 1
    finally:
        for sig, previous in handlers.items():
            signal.signal(sig, previous)
    return 0


if __name__ == "__main__":
    sys.exit(main())
