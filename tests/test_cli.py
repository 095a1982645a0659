"""The `passk` command, the theory part of `passk reproduce`, and atomic writes."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from passk import __version__, cli
from passk.reproduce import headline_table, reproduce, theory_results
from sim.files import atomic_write, atomic_write_json

ROOT = Path(__file__).resolve().parents[1]


def test_version_and_help():
    out = subprocess.run([sys.executable, "-m", "passk.cli", "--version"], capture_output=True, text=True, check=True)
    assert __version__ in out.stdout
    out = subprocess.run([sys.executable, "-m", "passk.cli", "--help"], capture_output=True, text=True, check=True)
    for command in ("reproduce", "toy", "transformer", "bench"):
        assert command in out.stdout


def test_bad_arguments_exit_nonzero():
    with pytest.raises(SystemExit) as err:
        cli.main(["toy", "--p-hard", "0.3", "--separation", "2", "--k", "0"])
    assert err.value.code == 2


def test_theory_results_match_closed_forms():
    res = theory_results()
    two = res["two_group"]
    assert two["k_star_closed_form"] == two["k_star_search"]
    k_star = two["k_star_closed_form"]
    inner = np.asarray(two["inner_product"])
    assert np.all(inner[: k_star - 1] >= 0) and np.all(inner[k_star - 1 :] < 0)
    assert np.all(np.asarray(two["cosine"])[k_star - 1 :] < 0)
    w = np.asarray(res["weights"]["w"])
    np.testing.assert_allclose(w[0], 1.0)
    omega = np.asarray(res["concentration"]["omega"])
    np.testing.assert_allclose(omega.sum(axis=1), 1.0, rtol=1e-12)
    hardest = int(np.argmin(res["concentration"]["p"]))
    assert omega[-1, hardest] > 0.99


def test_reproduce_theory_part_writes_figures_and_numbers(tmp_path):
    record = reproduce(outdir=tmp_path, quick=True, seed=0, parts=("theory",), progress=lambda m: None)
    data = json.loads((tmp_path / "results.json").read_text())
    assert data["theory"]["settings"] == {"quick": True, "seed": 0}
    for name in data["theory"]["figures"]:
        assert (tmp_path / name).stat().st_size > 1000
    assert {"theory_weights.png", "theory_weights.pdf", "theory_two_group.png"} <= {p.name for p in tmp_path.iterdir()}
    assert "two-group k*" in headline_table(record)
    # --resume skips a part already recorded with the same settings and all its figure files
    messages = []
    reproduce(outdir=tmp_path, quick=True, seed=0, parts=("theory",), resume=True, progress=messages.append)
    assert any("skipped" in m for m in messages)
    # ... and runs it again, redrawing, when one of its figure files is gone
    deleted = tmp_path / "theory_two_group.pdf"
    deleted.unlink()
    messages = []
    reproduce(outdir=tmp_path, quick=True, seed=0, parts=("theory",), resume=True, progress=messages.append)
    assert not any("skipped" in m for m in messages)
    assert any("figure file missing: theory_two_group.pdf" in m for m in messages), messages
    assert deleted.stat().st_size > 1000
    assert json.loads((tmp_path / "results.json").read_text())["theory"]["figures"] == data["theory"]["figures"]


def test_atomic_write_leaves_old_file_when_interrupted(tmp_path):
    path = tmp_path / "results.json"
    atomic_write_json(path, {"a": 1})

    def broken(f):
        f.write(b'{"a": ')
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic_write(path, broken)
    assert json.loads(path.read_text()) == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["results.json"]  # no temporary left behind


def test_atomic_json_refuses_nan(tmp_path):
    with pytest.raises(ValueError):
        atomic_write_json(tmp_path / "x.json", {"a": float("nan")})
    assert not (tmp_path / "x.json").exists()


def test_toy_command_reports_the_simulated_k_star(capsys):
    import jax

    from sim import toy_diagnostics
    from sim.toy import toy_figure_key

    assert cli.main(["toy", "--p-hard", "0.2", "--separation", "1.0", "--k", "1", "16", "--seed", "3"]) == 0
    out = capsys.readouterr().out
    expected = toy_diagnostics(p_hard=0.2, separation=1.0, k=16, ks=[1, 16], key=toy_figure_key(jax.random.key(3)))
    assert f"critical k* = {expected['k_star']}" in out
    rows = [line.split() for line in out.splitlines() if line.strip().startswith(("1 ", "16 "))]
    assert [r[0] for r in rows] == ["1", "16"]
    assert rows[0][-1] == "no"  # never a conflict at k = 1


def test_toy_command_without_arguments_prints_the_toy_figures_numbers():
    """`passk toy` alone: the regime, key and k of the toy figure, so its k* and J_1 are the figure's.

    Run as a user runs it, in float32 like the figure (the tests' float64 draws another bandit).
    """
    from sim import TOY_DEFAULTS
    from sim.toy import TOY_FIGURE_K

    bandit = json.loads((ROOT / "figures" / "results.json").read_text())["bandit"]
    figure = bandit["results"]["toy"]
    assert bandit["settings"]["seed"] == 0
    assert figure["regime"] == {name: TOY_DEFAULTS[name] for name in figure["regime"]}
    assert figure["k"] == TOY_FIGURE_K
    env = {name: value for name, value in os.environ.items() if name != "JAX_ENABLE_X64"}
    out = subprocess.run(
        [sys.executable, "-m", "passk.cli", "toy"], cwd=ROOT, env=env, capture_output=True, text=True, check=True
    ).stdout
    assert f"critical k* = {figure['k_star']}   safe k = {figure['safe_k']}" in out
    assert f"pass@1 J_1 = {figure['j1']:.4f}" in out
    (row,) = [line.split() for line in out.splitlines() if line.split()[:1] == [str(TOY_FIGURE_K)]]
    assert float(row[4]) == pytest.approx(figure["cos"], abs=1e-3)


def test_toy_command_rejects_bad_regime(capsys):
    assert cli.main(["toy", "--p-hard", "1.5", "--separation", "1.0", "--k", "4"]) == 2
    assert "p_hard" in capsys.readouterr().err


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith("passk reproduce: error: ")
    return lines[0]


def test_reproduce_out_that_cannot_be_made_is_a_one_line_error(capsys):
    assert cli.main(["reproduce", "--quick", "--parts", "theory", "--out", "/proc/x"]) == 2
    line = _one_line_error(capsys)
    assert "cannot create the output folder /proc/x" in line and "pass --out a folder" in line


def test_reproduce_out_naming_a_file_is_a_one_line_error(tmp_path, capsys):
    path = tmp_path / "results"
    path.write_text("not a folder")
    assert cli.main(["reproduce", "--quick", "--parts", "theory", "--out", str(path)]) == 2
    line = _one_line_error(capsys)
    assert f"output folder {path} is an existing file" in line and "pass --out a folder" in line
    assert path.read_text() == "not a folder"


@pytest.mark.parametrize(
    "text",
    [
        '{"theory": ',
        "[1, 2]",
        "\xff\xfe",
        '{"theory": 5}',
        '{"theory": {"settings": {"quick": true, "seed": 0}}}',
        '{"bandit": {"settings": {}, "figures": [3], "results": {}}}',
    ],
    ids=["truncated", "not-an-object", "not-utf8", "part-a-number", "part-without-results", "figure-not-a-name"],
)
def test_reproduce_resume_over_corrupt_results_is_a_one_line_error(tmp_path, capsys, text):
    path = tmp_path / "results.json"
    path.write_bytes(text.encode("latin-1"))
    assert cli.main(["reproduce", "--quick", "--parts", "theory", "--out", str(tmp_path), "--resume"]) == 2
    line = _one_line_error(capsys)
    assert str(path) in line and "delete it, or run without --resume" in line
    if text.startswith(('{"theory": 5', '{"theory": {', '{"bandit"')):  # a readable object, one part malformed
        assert "the entry of part " + ("'bandit'" if "bandit" in text else "'theory'") in line
    assert path.read_bytes() == text.encode("latin-1")  # the file is left for the user to inspect


@pytest.mark.slow
def test_reproduce_quick_all_parts(tmp_path):
    """`passk reproduce --quick` end to end (about two minutes on 2 cores)."""
    out = subprocess.run(
        [sys.executable, "-m", "passk.cli", "reproduce", "--quick", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        check=True,
    )
    data = json.loads((tmp_path / "results.json").read_text())
    from passk.reproduce import PARTS

    assert set(data) == set(PARTS) == {"theory", "bandit", "transformer", "ksweep", "sampled", "trainers"}
    for part in data.values():
        assert part["figures"] and all((tmp_path / f).exists() for f in part["figures"])
    assert "toy k* at the start" in out.stdout
    assert "toy n=8: median k* unbiased / plug-in" in out.stdout
    assert "pkpo, n=8, some k <= 8: toy regimes in conflict" in out.stdout
    assert "k sweep (all): agree / disagree / inconclusive, sampled; exact" in out.stdout
    rows = data["ksweep"]["results"]["k_sweep"]
    assert rows and {
        "task",
        "warm_start",
        "k_star",
        "k",
        "seeds",
        "pass1_change",
        "predicted_sign",
        "observed_sign",
    } <= set(rows[0])
    assert set(data["trainers"]["results"]["trainer_map"]) == set(data["trainers"]["results"]["transformer_warm_start"])


def test_reproduce_accepts_every_part_and_only_those():
    from passk.reproduce import ALL_PARTS, RUNNERS

    assert set(RUNNERS) == set(ALL_PARTS)
    parser = cli.build_parser()
    for part in ALL_PARTS:
        assert parser.parse_args(["reproduce", "--parts", part]).parts == [part]
    with pytest.raises(SystemExit):
        parser.parse_args(["reproduce", "--parts", "nonsense"])
