"""`passk lm`: an LLM-style RL run in miniature, with the exact evaluation at every step.

    passk lm --setting few-hard --estimator grouped-passk --k 4 --steps 200 --seed 0 --out runs/lm

writes into `--out`: the per-step rollout dumps `{step}.jsonl` in verl's schema with the section 11
fields (`passk diagnose OUT` reads them), `checkpoint.pkl` (a run started again with the same
arguments resumes there), `run.json` (the settings and, per step, the exact evaluation pass@1
`j1`, pass@k `jk`, `k_star`, `inner`, `mean_agreement`, `cos`, and the update's `update_inner`,
`update_norm`) and the figure `lm_run.png` / `.pdf`.

The settings (the hard share of the prompt population) and the default sizes live here, not in
:mod:`sim.lm`. Bad input (an unknown setting or estimator, `k` above what `n` allows for the
estimator, a non-positive number of steps, an output folder holding another run) is a ValueError:
one line, exit status 2.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import sys
import time
from pathlib import Path

import numpy as np

__all__ = ["DEFAULTS", "SETTINGS", "add_parser", "main", "run_lm", "seed_key"]

#: The settings: the share of hard prompts in the population (and in the evaluation set).
SETTINGS = {"few-hard": 0.1, "many-hard": 0.25}

#: The default sizes of the task, the model and the trainer.
DEFAULTS = {
    "n_digits": 5,
    "prompt_digits": 6,
    "answer_len": 3,
    "need": 2,
    "n_eval": 64,
    "d_model": 32,
    "n_heads": 2,
    "n_layers": 2,
    "d_mlp": 64,
    "batch_prompts": 32,
    "n_answers": 8,
    "epochs": 2,
    "clip": 0.2,
    "kl": 0.0,
    "aggregation": "token",
    "learning_rate": 1e-3,
    "n_folds": 4,
    "checkpoint_every": 25,
}


def add_parser(sub) -> None:
    """The `lm` subcommand (no JAX imported here)."""
    lm = sub.add_parser("lm", help="an LLM-style RL run in miniature, exact evaluation pass@1, pass@k and k* per step")
    lm.add_argument(
        "--setting",
        default="few-hard",
        help=f"the hard share: {', '.join(f'{k} ({v})' for k, v in SETTINGS.items())} (default: few-hard)",
    )
    lm.add_argument("--estimator", default="grpo", help="a trainer of theory.ESTIMATOR_TABLE (default: grpo)")
    lm.add_argument("--k", type=int, default=4, help="pass@k order of the estimator and of the evaluation (default: 4)")
    lm.add_argument("--steps", type=int, default=200, help="training steps (default: 200)")
    lm.add_argument("--seed", type=int, default=0, help="PRNG seed (default: 0)")
    lm.add_argument("--out", type=Path, required=True, help="run folder (dumps, checkpoint, run.json, figure)")
    knobs = {
        "batch_prompts": (int, "prompts drawn per step (B, a multiple of 4)"),
        "n_answers": (int, "answers sampled per prompt (n)"),
        "epochs": (int, "optimiser steps over each batch (mu)"),
        "checkpoint_every": (int, "steps between checkpoints"),
        "clip": (float, "importance-ratio clip epsilon"),
        "kl": (float, "weight of the KL penalty to the reference (initial) policy"),
        "learning_rate": (float, "Adam's step size"),
    }
    for name, (kind, text) in knobs.items():
        lm.add_argument(
            "--" + name.replace("_", "-"), type=kind, default=DEFAULTS[name], help=f"{text} (default: {DEFAULTS[name]})"
        )
    lm.add_argument("--aggregation", default=DEFAULTS["aggregation"], help="token or sequence (default: token)")
    lm.add_argument(
        "--sketch",
        type=int,
        default=0,
        metavar="D",
        help="also dump D-dimensional sketched score vectors (SPEC section 10) in `score`, the reward then "
        "in `acc` (read with passk diagnose OUT --reward-field acc); default 0: none",
    )
    lm.add_argument("--no-plot", action="store_true", help="skip the figure")
    lm.add_argument("--quiet", action="store_true", help="no progress lines")


def seed_key(seed: int):
    """`jax.random.key(seed)` for `0 <= seed < 2^32`; any other integer folds its high words in (distinct keys)."""
    import jax

    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"--seed must be an integer; got {seed!r}")
    key = jax.random.key(seed % 2**32)
    rest, sign = divmod(abs(seed), 2**32)[0], int(seed < 0)
    if rest or sign:
        key = jax.random.fold_in(key, sign)
        while rest:
            rest, word = divmod(rest, 2**32)
            key = jax.random.fold_in(key, word)
    return key


def _check_out(out: Path, fingerprint: str) -> None:
    """The run folder must be new, empty, or hold this same run (then it resumes)."""
    if not out.exists():
        return
    if not out.is_dir():
        raise ValueError(f"--out {out} is not a folder")
    entries = [p.name for p in out.iterdir() if not p.name.startswith(".")]
    if not entries:
        return
    from sim.lm.run import CHECKPOINT
    from sim.transformer.checkpoint import load_checkpoint

    owner = None
    if (out / "run.json").is_file():
        try:
            owner = json.loads((out / "run.json").read_text()).get("fingerprint")
        except (OSError, json.JSONDecodeError, AttributeError):
            owner = "unreadable"
    elif (out / CHECKPOINT).is_file():
        try:
            load_checkpoint(out / CHECKPOINT, fingerprint)
            owner = fingerprint
        except ValueError:
            owner = "another"
    if owner != fingerprint:
        raise ValueError(
            f"--out {out} holds another run or other files ({', '.join(sorted(entries)[:3])}, ...): "
            "give a new folder, or the same arguments to resume"
        )
    probe = out / ".passk-lm-write-test"
    try:
        probe.write_text("")
        probe.unlink()
    except OSError as err:
        raise ValueError(f"--out {out} is not writable: {err.strerror or err}") from None


def run_lm(
    *,
    setting: str,
    estimator: str,
    k: int,
    steps: int,
    seed: int,
    out: Path,
    progress=None,
    plot: bool = True,
    sketch_dim: int = 0,
    **sizes,
) -> dict:
    """Build the task and the trainer from the settings, run, write `run.json` and the figure; return the record."""
    if setting not in SETTINGS:
        raise ValueError(f"--setting must be one of {', '.join(SETTINGS)}; got {setting!r}")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"--steps must be a positive integer; got {steps!r}")

    import theory
    from sim.files import atomic_write_json
    from sim.lm import policy, run, train
    from sim.lm import task as lm_task

    if estimator not in theory.ESTIMATOR_TABLE:
        raise ValueError(f"--estimator must be one of {', '.join(theory.ESTIMATOR_TABLE)}; got {estimator!r}")
    s = {**DEFAULTS, **sizes}
    task = lm_task.LMTask(
        n_digits=s["n_digits"],
        prompt_digits=s["prompt_digits"],
        answer_len=s["answer_len"],
        need=s["need"],
        hard_share=SETTINGS[setting],
        n_eval=s["n_eval"],
    )
    model = policy.model_config(
        task, d_model=s["d_model"], n_heads=s["n_heads"], n_layers=s["n_layers"], d_mlp=s["d_mlp"]
    )
    config = train.RunConfig(
        estimator=estimator,
        k=k,
        model=model,
        batch_prompts=s["batch_prompts"],
        n_answers=s["n_answers"],
        epochs=s["epochs"],
        clip=s["clip"],
        kl=s["kl"],
        aggregation=s["aggregation"],
        learning_rate=s["learning_rate"],
        n_folds=s["n_folds"],
    )
    if estimator == "grouped-passk" and k >= config.n_answers:
        print(
            f"passk lm: warning: grouped-passk at k = n = {config.n_answers} gives zero advantages in every group "
            "(SPEC section 6): the policy will not move",
            file=sys.stderr,
        )
    key = seed_key(seed)
    if isinstance(sketch_dim, bool) or not isinstance(sketch_dim, int) or sketch_dim < 0:
        raise ValueError(f"--sketch must be an integer >= 0; got {sketch_dim!r}")
    fingerprint = run.run_fingerprint(task, config, key, sketch_dim)
    out = Path(out)
    _check_out(out, fingerprint)
    start = time.perf_counter()
    result = run.train_run(
        task,
        config,
        key=key,
        steps=steps,
        out=out,
        checkpoint_every=s["checkpoint_every"],
        progress=progress,
        sketch_dim=sketch_dim,
    )
    record = {
        "setting": setting,
        "seed": seed,
        "steps": steps,
        "fingerprint": fingerprint,
        "sketch_dim": sketch_dim,
        "task": dataclasses.asdict(task),
        "config": {**dataclasses.asdict(config), "model": dataclasses.asdict(model)},
        "n_prompts": task.n_prompts,
        "n_answers_per_prompt": task.n_answers,
        "correct_answers_per_prompt": lm_task.n_correct_answers(task),
        "eval": {name: [r[name] for r in result["records"]] for name in ("j1", "jk", "k_star")},
        "records": result["records"],
        "seconds": time.perf_counter() - start,
    }
    atomic_write_json(out / "run.json", record)
    if plot:
        from passk.plots import lm as lm_plot

        lm_plot.draw(record, out)
    return record


def _progress_printer(every: int):
    def show(t, row):
        if t % every == 0:
            k_star = "none" if row["k_star"] is None else row["k_star"]
            print(
                f"step {t:4d}  pass@1 {row['j1']:.4f}  pass@k {row['jk']:.4f}  k* {k_star}  "
                f"<g1,u> {row['update_inner']:+.2e}  reward {row['reward']:.3f}",
                flush=True,
            )

    return show


def main(args: argparse.Namespace) -> int:
    """Run `passk lm` from parsed arguments; ValueError for bad input (the caller prints one line, exit 2)."""
    sizes = {
        name: getattr(args, name)
        for name in (
            "batch_prompts",
            "n_answers",
            "epochs",
            "checkpoint_every",
            "clip",
            "kl",
            "learning_rate",
            "aggregation",
        )
    }
    record = run_lm(
        setting=args.setting,
        estimator=args.estimator,
        k=args.k,
        steps=args.steps,
        seed=args.seed,
        out=args.out,
        progress=None if args.quiet else _progress_printer(10),
        plot=not args.no_plot,
        sketch_dim=args.sketch,
        **sizes,
    )
    last = record["records"][-1]
    print(
        f"{record['steps']} steps in {record['seconds']:.1f} s; final exact pass@1 {last['j1']:.4f}, "
        f"pass@{args.k} {last['jk']:.4f}, k* {last['k_star'] if last['k_star'] is not None else 'none'}; "
        f"wrote {args.out}/run.json",
        file=sys.stdout,
    )
    return 0


# ---------------------------------------------------------------------------------------------
# The confirmation (`passk reproduce --parts lm`)

#: The study's sizes: trainers `(estimator, k)`, with GRPO as the control; full and quick. The
#: starting `k*` of the evaluation set is 8 to 16 at seeds 0-2 (few-hard) and falls to 2-3 within
#: about 25 steps of GRPO, so `k = 2` is below it throughout, `k = 8, 15` at or above it for most steps.
STUDY = {
    "full": {
        "settings": tuple(SETTINGS),
        "seeds": 3,
        "steps": 200,
        "n_answers": 16,
        "trainers": (("grpo", 4), ("grouped-passk", 2), ("grouped-passk", 8), ("grouped-passk", 15)),
    },
    "quick": {
        "settings": ("few-hard",),
        "seeds": 1,
        "steps": 8,
        "n_answers": 8,
        "trainers": (("grpo", 4), ("grouped-passk", 4)),
    },
}


def _regime_check(records) -> dict:
    """The statement, step by step: at `k >= k*_t` pass@1 falls and pass@k rises; below, both rise.

    Each step `t` is classed by the exact `k*_t` of the evaluation set at `theta_t` (none: below);
    its outcome is the change of the exact pass@1 and pass@k over the update. A step against the
    statement is explained by its update-aware inner product `<g_1, u>` (SPEC section 5) when that
    has the sign of the observed pass@1 change (the update taken, not `grad J_k`, decided it), and
    is otherwise left to second-order terms, clipping and Adam's state.
    """
    rows = {"above": [], "below": []}
    for now, nxt in itertools.pairwise(records):
        k = now["k_used"]  # None for the k-free trainers (GRPO): every step is "below"
        above = k is not None and now["k_star"] is not None and k >= now["k_star"]
        d1, dk = nxt["j1"] - now["j1"], nxt["jk"] - now["jk"]
        agrees = (d1 < 0 < dk) if above else (d1 > 0 and dk > 0)
        rows["above" if above else "below"].append((agrees, np.sign(now["update_inner"]) == np.sign(d1)))
    out = {}
    for name, cases in rows.items():
        against = [explained for ok, explained in cases if not ok]
        out[name] = {
            "steps": len(cases),
            "agree": sum(ok for ok, _ in cases),
            "against_explained_by_update_inner": int(sum(against)),
            "against": len(against),
        }
    return out


def _k_star_path(records) -> dict:
    ks = [r["k_star"] for r in records]
    found = [k for k in ks if k is not None]
    return {
        "start": ks[0],
        "end": ks[-1],
        "min": min(found) if found else None,
        "median": float(np.median(found)) if found else None,
        "share_none": 1 - len(found) / len(ks),
        "first_step_at_or_below_4": next((t for t, k in enumerate(ks) if k is not None and k <= 4), None),
    }


def study(*, quick: bool, seed: int, outdir: Path, progress=None) -> tuple[dict, list]:
    """Every setting x seed x trainer of :data:`STUDY`; returns `(results, figure paths)`.

    Runs go to `outdir/.lm_runs/` (each resumes from its checkpoint). Per run: the exact pass@1 and
    pass@k at the start and the end, their change against the GRPO control of the same setting and
    seed, the step-by-step check of the statement (:func:`_regime_check`) and the path of `k*`.
    Intervals over seeds are t intervals (95%) of the per-seed values.
    """
    from passk.plots import lm as lm_plot

    size = STUDY["quick" if quick else "full"]
    runs = []
    for setting in size["settings"]:
        for s in range(size["seeds"]):
            for estimator, k in size["trainers"]:
                name = f"{setting}-{estimator}-k{k}-seed{seed + s}"
                if progress:
                    progress(f"lm: {name}")
                record = run_lm(
                    setting=setting,
                    estimator=estimator,
                    k=k,
                    steps=size["steps"],
                    seed=seed + s,
                    out=Path(outdir) / ".lm_runs" / name,
                    plot=False,
                    n_answers=size["n_answers"],
                )
                recs = record["records"]
                runs.append(
                    {
                        "setting": setting,
                        "seed": seed + s,
                        "estimator": estimator,
                        "k": k,
                        "j1": [r["j1"] for r in recs],
                        "jk": [r["jk"] for r in recs],
                        "p_end": recs[-1].get("p"),
                        "k_star": [r["k_star"] for r in recs],
                        "check": _regime_check(recs),
                        "k_star_path": _k_star_path(recs),
                        "seconds": record["seconds"],
                    }
                )
    results = {
        "size": {k: list(v) if isinstance(v, tuple) else v for k, v in size.items()},
        "runs": runs,
        "summary": _summary(runs),
    }
    results["headline"] = {
        f"{row['setting']} {row['estimator']} k={row['k']}: share of steps agreeing "
        f"(above k*, below k*)": f"{row['above_agree']}, {row['below_agree']}"
        for row in results["summary"]
    }
    return results, lm_plot.draw_study(results, Path(outdir))


def _count(group, sides, hits: str, total: str) -> str:
    """`"hits/total"` summed over the runs of `group` and the `sides` of their step-by-step check."""
    a = sum(r["check"][g][hits] for r in group for g in sides)
    b = sum(r["check"][g][total] for r in group for g in sides)
    return f"{a}/{b}"


def _interval(values):
    """Mean over seeds with its 95% Student t interval (:func:`sim.intervals.mean_interval`); None when empty."""
    from sim.intervals import mean_interval

    x = [v for v in values if v is not None]
    return mean_interval(np.asarray(x, dtype=float)) if x else None


def _pass_at(p, k) -> float:
    """`mean_i 1 - (1 - p_i)^k` of a list of per-prompt success."""
    return float(np.mean(1.0 - (1.0 - np.asarray(p, dtype=float)) ** k))


def _summary(runs) -> list:
    rows = []
    keys = sorted({(r["setting"], r["estimator"], r["k"]) for r in runs}, key=str)
    for setting, estimator, k in keys:
        group = [r for r in runs if (r["setting"], r["estimator"], r["k"]) == (setting, estimator, k)]
        control = {r["seed"]: r for r in runs if r["setting"] == setting and r["estimator"] == "grpo"}

        def share(r, regime):
            c = r["check"][regime]
            return c["agree"] / c["steps"] if c["steps"] else None

        rows.append(
            {
                "setting": setting,
                "estimator": estimator,
                "k": k,
                "seeds": len(group),
                "j1_change": _interval([r["j1"][-1] - r["j1"][0] for r in group]),
                "jk_change": _interval([r["jk"][-1] - r["jk"][0] for r in group]),
                "j1_vs_control": _interval(
                    [r["j1"][-1] - control[r["seed"]]["j1"][-1] for r in group if r["seed"] in control]
                ),
                # pass@k at this trainer's k, against the control's at the same k (from the per-prompt p)
                "jk_vs_control": _interval(
                    [
                        _pass_at(r["p_end"], k) - _pass_at(control[r["seed"]]["p_end"], k)
                        for r in group
                        if r["seed"] in control and r["p_end"] is not None and control[r["seed"]]["p_end"] is not None
                    ]
                ),
                "above_share": _interval([share(r, "above") for r in group]),
                "below_share": _interval([share(r, "below") for r in group]),
                "above_agree": _count(group, ("above",), "agree", "steps"),
                "below_agree": _count(group, ("below",), "agree", "steps"),
                "against_explained": _count(group, ("above", "below"), "against_explained_by_update_inner", "against"),
                "k_star_start": [r["k_star_path"]["start"] for r in group],
                "k_star_end": [r["k_star_path"]["end"] for r in group],
            }
        )
    return rows
