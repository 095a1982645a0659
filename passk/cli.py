"""The `passk` command line."""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

from passk import __version__
from passk import lm as _lm

#: The orders `passk toy` reports without `--k`.
TOY_REPORT_KS = (1, 2, 4, 8, 16, 32, 64)


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="passk",
        description="Why optimising pass@k lowers pass@1: reproduce the figures, explore regimes, benchmark.",
    )
    parser.add_argument("--version", action="version", version=f"passk-interference {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    rep = sub.add_parser("reproduce", help="compute every result, draw the figures, write figures/results.json")
    rep.add_argument("--quick", action="store_true", help="small sizes (about a minute; what the tests run)")
    rep.add_argument("--out", type=Path, default=Path("figures"), help="output folder (default: figures)")
    rep.add_argument("--seed", type=int, default=0, help="PRNG seed (default: 0)")
    rep.add_argument(
        "--parts",
        nargs="+",
        default=None,
        choices=["theory", "bandit", "transformer", "ksweep", "sampled", "trainers", "safe", "lm", "forecast"],
        help="run only these parts (default: all but safe, lm and forecast, which take about 6, 60 and 40 "
        "minutes on 2 CPU cores; forecast reuses lm's runs)",
    )
    rep.add_argument(
        "--resume",
        action="store_true",
        help="skip parts already in results.json with the same settings and all their figure files",
    )

    # Defaults None: the toy's own (`sim.TOY_DEFAULTS`, printed in the report's first line), read when
    # the command runs (importing sim here would import JAX for every command).
    toy = sub.add_parser("toy", help="diagnostics of one easy/hard toy regime (default: the toy figure's)")
    toy.add_argument(
        "--p-hard", type=float, default=None, help="probability that a prompt is hard, in [0, 1] (default: the toy's)"
    )
    toy.add_argument(
        "--separation",
        type=float,
        default=None,
        help="distance between the easy and hard feature means (default: the toy's)",
    )
    toy.add_argument(
        "--k",
        type=_positive_int,
        nargs="+",
        default=None,
        help=f"pass@k orders to report (default: {' '.join(map(str, TOY_REPORT_KS))})",
    )
    toy.add_argument("--n-prompts", type=_positive_int, default=None, help="number of prompts (default: the toy's)")
    toy.add_argument("--n-actions", type=_positive_int, default=None, help="number of answers (default: the toy's)")
    toy.add_argument("--seed", type=int, default=0, help="the seed of `passk reproduce --seed` (default: 0)")
    toy.add_argument("--json", type=Path, default=None, help="also write the diagnostics to this JSON file")

    tr = sub.add_parser("transformer", help="the end-to-end transformer confirmation")
    tr.add_argument("--quick", action="store_true", help="small sizes (under a minute)")
    tr.add_argument("--json", type=Path, default=None, help="write the results to this JSON file")
    tr.add_argument("--seed", type=int, default=0)
    tr.add_argument(
        "--checkpoint-dir",
        type=Path,
        default=None,
        help="checkpoint folder; a run restarted with the same folder resumes",
    )

    diag = sub.add_parser("diagnose", help="is a run in the conflict regime, at which k, how sure (from its answers)")
    diag.add_argument(
        "file",
        nargs="?",
        type=Path,
        default=None,
        help="the run: .npz (rewards, scores, mu, prompt_ids), .jsonl (one answer a line), .csv (counts), "
        "a framework's step dump (verl .jsonl, TRL .parquet, NeMo-RL .jsonl), or a directory of "
        "per-step dumps (a table with a row per step)",
    )
    diag.add_argument(
        "--format",
        choices=["verl", "trl", "nemo-rl", "npz", "jsonl", "csv"],
        default=None,
        help="the dump's format (default: detected from the file names and keys)",
    )
    diag.add_argument(
        "--reward-field",
        default=None,
        help="the reward key or column (default: verl score, NeMo-RL rewards, jsonl reward, TRL the one reward column)",
    )
    diag.add_argument(
        "--group-size",
        type=_positive_int,
        default=None,
        help="answers per prompt; required for TRL and NeMo-RL (blocks of consecutive answers), checked "
        "for every group when given",
    )
    diag.add_argument(
        "--success-threshold",
        type=float,
        default=None,
        help="an answer succeeds when its reward is above T (needed when rewards are not 0/1)",
    )
    diag.add_argument(
        "--trained-k",
        type=_positive_int,
        default=None,
        help="the k the run trains at: report the first step whose k* interval lies at or below it",
    )
    diag.add_argument(
        "--k", type=_positive_int, nargs="+", default=None, help="orders k to report (default: 1, 2, 4, ... up to n)"
    )
    diag.add_argument("--level", type=float, default=0.95, help="level of the intervals (default: 0.95)")
    diag.add_argument("--json", type=Path, default=None, help="write the report to this JSON file (atomically)")
    diag.add_argument("--plot", type=Path, default=None, help="draw I_k and the trainers' weights (.png, .pdf, .svg)")
    diag.add_argument(
        "--example",
        nargs="?",
        const="toy",
        default=None,
        choices=("toy", "verl", "trl", "nemo-rl"),
        help="diagnose an example shipped with the package: the toy bandit's answers (toy, the default), "
        "or a run directory of 12 steps in a framework's schema (verl, trl, nemo-rl; --trained-k "
        "defaults to its k = 8)",
    )
    diag.add_argument(
        "--forecast",
        action="store_true",
        help="per step of a run directory, the probability that pass@1 is lower --horizon steps later "
        "(needs alignments and --trained-k; fitted on miniature LLM runs, see the README)",
    )
    diag.add_argument(
        "--horizon", type=_positive_int, default=10, help="steps ahead of --forecast: 5, 10 or 20 (default: 10)"
    )

    _lm.add_parser(sub)
    bench = sub.add_parser("bench", help="benchmarks: ours against baselines, as ratios")
    bench.add_argument("--quick", action="store_true", help="small sizes")
    bench.add_argument("--json", type=Path, default=None, help="write the table to this JSON file")
    bench.add_argument("--only", nargs="+", default=None, help="run only these benchmarks")
    bench.add_argument(
        "--runs",
        type=_positive_int,
        default=1,
        help="full runs; each row is the run with the median ratio, with the spread (default 1)",
    )
    return parser


def _cmd_reproduce(args) -> int:
    from passk import reproduce as rep

    parts = tuple(args.parts) if args.parts else rep.PARTS
    record = rep.reproduce(outdir=args.out, quick=args.quick, seed=args.seed, parts=parts, resume=args.resume)
    print(rep.headline_table(record))
    print(f"\nfigures and numbers: {args.out}/ (results.json)")
    return 0


def format_toy(diag: dict, ks) -> str:
    """A text report of `sim.toy_diagnostics` at the requested `ks`."""
    reg = diag["regime"]
    curves = diag["curves"]
    col = {k: i for i, k in enumerate(curves["ks"])}
    lines = [
        f"toy regime: p_hard={reg['p_hard']}, separation={reg['separation']}, "
        f"A={reg['n_actions']}, P={reg['n_prompts']}, start_logit={reg['start_logit']}",
        f"pass@1 J_1 = {diag['j1']:.4f}   ||grad J_1|| = {diag['grad_norm_1']:.4g}",
        f"critical k* = {diag['k_star'] if diag['k_star'] is not None else 'none'}   safe k = {diag['safe_k']}",
    ]
    for name, group in diag["groups"].items():
        if group:
            lines.append(
                f"{name:>4} prompts: {group['count']:4d}, mean p {group['mean_p']:.3f}, "
                f"mean agreement {group['mean_agreement']:+.3e}, negative share {group['share_negative_agreement']:.2f}"
            )
    lines.append(f"{'k':>6}  {'J_k':>8}  {'I_k':>11}  {'A_k':>11}  {'cos_k':>7}  conflict")
    for k in ks:
        i = col[k]
        a_k = curves["mean_agreement"][i]
        lines.append(
            f"{k:>6}  {curves['jk'][i]:8.4f}  {curves['inner'][i]:11.3e}  {a_k:11.3e}  "
            f"{curves['cos'][i]:7.3f}  {'yes' if a_k < 0 else 'no'}"
        )
    return "\n".join(lines)


def _cmd_toy(args) -> int:
    import jax

    from sim.files import atomic_write_json
    from sim.toy import TOY_FIGURE_K, toy_diagnostics, toy_figure_key

    given = {
        "p_hard": args.p_hard,
        "separation": args.separation,
        "n_prompts": args.n_prompts,
        "n_actions": args.n_actions,
    }
    regime = {name: value for name, value in given.items() if value is not None}
    ks = sorted(set(args.k)) if args.k else list(TOY_REPORT_KS)
    k = ks[-1] if args.k else TOY_FIGURE_K
    # the key of the toy figure in `passk reproduce --seed`: the same regime gives the same bandit
    diag = toy_diagnostics(k=k, ks=ks, key=toy_figure_key(jax.random.key(args.seed)), **regime)
    print(format_toy(diag, ks))
    if args.json:
        atomic_write_json(args.json, diag)
    return 0


def _cmd_transformer(args) -> int:
    import jax

    from passk import presets
    from passk.reproduce import Progress, transformer_headline
    from sim.files import atomic_write_json
    from sim.studies import transformer_experiment

    results = {
        "quick": args.quick,
        **transformer_experiment.run_experiment(
            config=presets.preset(args.quick).transformer,
            key=jax.random.key(args.seed),
            checkpoint_dir=args.checkpoint_dir,
            progress=Progress(),
        ),
    }
    results["headline"] = transformer_headline(results)
    for name, value in results["headline"].items():
        print(f"{name}: {value}")
    if args.json:
        atomic_write_json(args.json, results)
    return 0


def _cmd_diagnose(args) -> int:
    from passk import diagnose as dg
    from sim.files import atomic_write_bytes, atomic_write_json

    if (args.example is not None) == (args.file is not None):
        raise ValueError("give a FILE or --example (one of the two)")
    path = args.file
    if args.example is not None:
        path = dg.example_path("npz" if args.example == "toy" else args.example)
        if args.example != "toy":
            from passk.examples import RUN_GROUP_SIZE, RUN_TRAINED_K

            if args.format in (None, args.example):
                args.group_size = args.group_size or RUN_GROUP_SIZE
            args.trained_k = args.trained_k or RUN_TRAINED_K
    dg.check_outputs(json_path=args.json, plot_path=args.plot)
    if dg.is_run_input(path, args):
        from passk import runs
        from passk.frameworks import Options

        if args.success_threshold is not None and not math.isfinite(args.success_threshold):
            raise ValueError(f"--success-threshold must be a finite number; got {args.success_threshold}")
        options = Options(args.format, args.reward_field, args.group_size, args.success_threshold)
        ks = args.k
        if args.forecast:
            from passk import forecast

            ks = forecast.check_request(args.trained_k, args.horizon, ks)
        report = runs.diagnose_run(path, options=options, ks=ks, level=args.level, trained_k=args.trained_k)
        entries = (
            forecast.forecast_run(report, trained_k=args.trained_k, horizon=args.horizon) if args.forecast else None
        )
        if args.plot is None:
            figure = None
        elif entries is None:
            figure = runs.run_figure_bytes(report, args.plot.suffix.lower())
        else:
            figure = forecast.figure_bytes(report, entries, args.plot.suffix.lower())
        print(runs.format_run(report))
        if entries is not None:
            report["forecast"] = {"horizon": args.horizon, "trained_k": args.trained_k}
            print(forecast.format_forecast(entries, args.trained_k))
    elif args.forecast:
        raise ValueError(f"--forecast reads a run directory of per-step dumps with alignments; got {path}")
    else:
        report = dg.diagnose_file(path, ks=args.k, level=args.level)
        figure = dg.figure_bytes(report, args.plot.suffix.lower()) if args.plot is not None else None
        print(dg.format_report(report))
    if args.json:
        atomic_write_json(args.json, report)
    if figure is not None:
        atomic_write_bytes(args.plot, figure)
    return 0


def _cmd_bench(args) -> int:
    """Run the benchmarks, print the table, write the JSON and the scaling figure beside it."""
    from passk.benchmarks import run as bench_run
    from sim.files import atomic_write_json

    runs = [bench_run.run(quick=args.quick, only=args.only) for _ in range(args.runs)]
    rows = runs[0] if args.runs == 1 else bench_run.median_of_runs(runs)
    print(bench_run.format_table(rows))
    details = bench_run.details_text(rows)
    if details:
        print("\n" + details)
    if args.json is not None:
        atomic_write_json(Path(args.json), rows)
        print(f"\nwrote {args.json}")
        from passk.plots import bench as bench_plot

        for path in bench_plot.draw(rows, Path(args.json).parent):
            print(f"wrote {path}")
    return 0


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    if args.command != "bench":  # the benchmarks time compilation themselves: no cache there
        from passk.cache import enable_compile_cache

        enable_compile_cache()  # before anything compiles; PASSK_NO_COMPILE_CACHE=1 turns it off
    handlers = {
        "reproduce": _cmd_reproduce,
        "toy": _cmd_toy,
        "transformer": _cmd_transformer,
        "bench": _cmd_bench,
        "diagnose": _cmd_diagnose,
        "lm": _lm.main,
    }
    try:
        return handlers[args.command](args)
    except ValueError as err:
        print(f"passk {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
