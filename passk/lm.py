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
import json
import sys
import time
from pathlib import Path

__all__ = ["DEFAULTS", "SETTINGS", "add_parser", "build_run", "main", "run_lm", "seed_key"]

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
    from sim.files import check_writable

    check_writable(out / "run.json", name="--out")


def build_run(setting: str, estimator: str, k: int, **sizes):
    """The task and the trainer's settings of a run: `(LMTask, RunConfig)` from :data:`DEFAULTS` and `sizes`."""
    from sim.lm import policy, train
    from sim.lm import task as lm_task

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
    return task, config


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
    from sim.lm import run
    from sim.lm import task as lm_task

    if estimator not in theory.ESTIMATOR_TABLE:
        raise ValueError(f"--estimator must be one of {', '.join(theory.ESTIMATOR_TABLE)}; got {estimator!r}")
    task, config = build_run(setting, estimator, k, **sizes)
    model = config.model
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
        checkpoint_every={**DEFAULTS, **sizes}["checkpoint_every"],
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
        # section 10 needs score vectors: one sketched run per setting (first seed), 2.6 MB a step
        "sketch": {"dim": 256, "steps": 100, "trainers": (("grouped-passk", 8),)},
        "gap_eval": 512,
    },
    "quick": {
        "settings": ("few-hard",),
        "seeds": 1,
        "steps": 8,
        "n_answers": 8,
        "trainers": (("grpo", 4), ("grouped-passk", 4)),
        "sketch": {"dim": 8, "steps": 3, "trainers": (("grouped-passk", 4),)},
        "gap_eval": 128,
    },
}


def study(*, quick: bool, seed: int, outdir: Path, progress=None) -> tuple[dict, list]:
    """Every setting x seed x trainer of :data:`STUDY`; returns `(results, figure paths)`.

    Runs go to `outdir/.lm_runs/` (each resumes from its checkpoint). Per run: the exact pass@1 and
    pass@k at the start and the end, their change against the GRPO control of the same setting and
    seed, the step-by-step check of the statement (:func:`sim.studies.lm_confirmation.regime_check`)
    and the path of `k*` (:mod:`sim.studies.lm_confirmation`). Intervals over seeds are t intervals
    (95%) of the per-seed values.

    Then the diagnosis against the exact values (:mod:`passk.lm_diagnosis`, `results["diagnosis"]`):
    every run's dumps read by `passk diagnose` (section 11), plus one sketched run per setting
    (section 10 as well), and the gap between the evaluation set's exact `I_k` and those of a
    larger set and of fresh batches at the final parameters of the first seed's runs.
    """
    from passk.plots import lm as lm_plot
    from sim.studies import lm_confirmation

    size = STUDY["quick" if quick else "full"]
    runs, folders = [], []
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
                folders.append(Path(outdir) / ".lm_runs" / name)
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
                        "check": lm_confirmation.regime_check(recs),
                        "k_star_path": lm_confirmation.k_star_path(recs),
                        "seconds": record["seconds"],
                    }
                )
    results = {
        "size": {k: list(v) if isinstance(v, tuple) else v for k, v in size.items()},
        "runs": runs,
        "summary": lm_confirmation.summarise(runs),
    }
    results["headline"] = {
        f"{row['setting']} {row['estimator']} k={row['k']}: share of steps agreeing "
        f"(above k*, below k*)": f"{row['above_agree']}, {row['below_agree']}"
        for row in results["summary"]
    }
    results["diagnosis"] = _diagnosis(size, seed, Path(outdir), folders, progress)
    figures = lm_plot.draw_study(results, Path(outdir))
    return results, figures + lm_plot.draw_diagnosis(results["diagnosis"], Path(outdir))


def _diagnosis(size: dict, seed: int, outdir: Path, folders: list, progress) -> dict:
    """The sketched runs, then every run diagnosed against its exact values (:mod:`passk.lm_diagnosis`)."""
    from passk import lm_diagnosis

    sketch = size["sketch"]
    sketched = []
    for setting in size["settings"]:
        for estimator, k in sketch["trainers"]:
            name = f"{setting}-{estimator}-k{k}-seed{seed}-sketch{sketch['dim']}"
            if progress:
                progress(f"lm: {name}")
            run_lm(
                setting=setting,
                estimator=estimator,
                k=k,
                steps=sketch["steps"],
                seed=seed,
                out=outdir / ".lm_runs" / name,
                plot=False,
                n_answers=size["n_answers"],
                sketch_dim=sketch["dim"],
            )
            sketched.append(outdir / ".lm_runs" / name)
    if progress:
        progress(f"lm: diagnosing {len(folders) + len(sketched)} runs against their exact values")
    diagnoses = [lm_diagnosis.diagnose_lm_run(folder) for folder in folders + sketched]
    first_seed = [f for f, d in zip(folders, diagnoses) if d["seed"] == seed] + sketched
    gaps = [{"run": f.name, **lm_diagnosis.estimand_gap(f, n_eval=size["gap_eval"])} for f in first_seed]
    return lm_diagnosis.report(diagnoses, gaps, sketch_dim=sketch["dim"])
