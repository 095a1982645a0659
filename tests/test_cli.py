"""The `passk` command, the theory part of `passk reproduce`, and atomic writes."""

import json
import subprocess
import sys

import numpy as np
import pytest

from passk import __version__, cli
from passk.reproduce import headline_table, reproduce, theory_results
from sim._atomic import atomic_write, atomic_write_json


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
    # --resume skips a part already recorded with the same settings
    messages = []
    reproduce(outdir=tmp_path, quick=True, seed=0, parts=("theory",), resume=True, progress=messages.append)
    assert any("skipped" in m for m in messages)


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
