"""The README's example runs and prints what the README says."""

import contextlib
import io
import pathlib
import re

README = pathlib.Path(__file__).resolve().parent.parent / "README.md"


def test_readme_example_runs_and_finds_k_star_4():
    text = README.read_text()
    block = re.search(r"```python\n(.*?)```", text, re.S).group(1)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(block, str(README), "exec"), {})
    lines = out.getvalue().strip().splitlines()
    assert lines[-2:] == ["4", "4"]


def test_readme_shows_both_setup_commands():
    text = README.read_text()
    assert "passk reproduce" in text and "python -m pytest" in text
    ci = (README.parent / ".ci" / "run").read_text()
    assert 'pip install --quiet -e ".[test]"' in ci and "python -m pytest" in ci


def _two_group():
    import json

    data = json.loads((README.parent / "figures" / "results.json").read_text())
    return data["theory"]["results"]["two_group"]


def test_readme_example_is_the_two_group_figure_of_results_json():
    # The example's inputs and printed k* are those of figures/results.json's two-group figure.
    text = README.read_text()
    block = re.search(r"```python\n(.*?)```", text, re.S).group(1)
    two_group = _two_group()
    grads = re.search(r"grads = np.array\((.*?)\)", block).group(1)
    assert eval(grads) == two_group["grads"]
    assert f"np.array([{two_group['q']}, {1 - two_group['q']}])" in block
    assert f"np.array([{two_group['p_hard']}, {two_group['p_easy']}])" in block
    assert f"# {two_group['k_star_search']}, exact first k" in block
    assert f"# {two_group['k_star_closed_form']}, closed form" in block
    agreement = re.search(r"<grad p_i, grad J_1>: \[(.*?)\]", block).group(1)
    assert [float(x) for x in agreement.split(",")] == [round(a, 2) for a in two_group["agreement"]]


def test_readme_links_to_the_docs_pages_and_figures_that_exist():
    text = README.read_text()
    targets = re.findall(r"\]\(((?:docs|figures)/[^)#]+)\)", text)
    assert any(t.startswith("docs/") for t in targets) and any(t.startswith("figures/") for t in targets)
    for target in targets:
        assert (README.parent / target).exists(), target
    assert 'pip install -e ".[docs]" && sphinx-build -W -b html docs docs/_build/html' in text


def test_readme_tables_are_rendered_from_results_json():
    # Every `<!-- results: NAME -->` block of the README is what figures/results.json renders.
    import json

    from passk import readme_blocks

    text = README.read_text()
    record = json.loads((README.parent / "figures" / "results.json").read_text())
    assert readme_blocks.refresh(text, record) == text, "run: python -m passk.readme_blocks"


def test_a_results_block_follows_the_record_and_refuses_unknown_names():
    import pytest

    from passk import readme_blocks

    row = {
        "setting": "few-hard",
        "estimator": "grouped-passk",
        "k": 8,
        "seeds": 3,
        "j1_change": {"value": -0.05, "lower": -0.07, "upper": -0.03},
        "jk_change": {"value": 0.02, "lower": 0.01, "upper": 0.03},
        "above_agree": "10/12",
        "below_agree": "3/4",
        "j1_vs_control": {"value": -0.2, "lower": -0.3, "upper": -0.1},
        "jk_vs_control": {"value": 0.1, "lower": 0.05, "upper": 0.15},
        "against_explained": "5/6",
        "k_star_start": [9, None],
        "k_star_end": [3, 4],
    }
    record = {"lm": {"results": {"summary": [row]}}}
    stale = "a\n<!-- results: lm-summary -->\nold\n<!-- /results -->\nb\n"
    fresh = readme_blocks.refresh(stale, record)
    assert "old" not in fresh and "-0.050 [-0.070, -0.030]" in fresh and "10/12" in fresh
    assert "9 to 3, none to 4" in fresh
    assert fresh.startswith("a\n") and fresh.endswith("<!-- /results -->\nb\n")
    assert readme_blocks.refresh(fresh, record) == fresh
    row["j1_change"]["value"] = -0.06
    assert readme_blocks.refresh(fresh, record) != fresh
    with pytest.raises(ValueError, match="unknown results block 'nope'"):
        readme_blocks.refresh("<!-- results: nope -->\n<!-- /results -->", record)


def test_what_the_readme_says_of_the_llm_run_holds_in_results_json():
    # "at k = 8 and k = 15 ... lower pass@1 and higher pass@k [than GRPO] in the few-hard setting,
    # with intervals over seeds that exclude zero; at k = 2 neither differs"; "GRPO drives the exact
    # k* down to 2 or 3"; disagreeing steps mostly explained by <g_1, u>.
    import json

    text = README.read_text()
    data = json.loads((README.parent / "figures" / "results.json").read_text())
    assert "ends with lower pass@1 and higher pass@k in\nthe few-hard setting" in text
    rows = {(r["setting"], r["estimator"], r["k"]): r for r in data["lm"]["results"]["summary"]}
    for k in (8, 15):
        r = rows[("few-hard", "grouped-passk", k)]
        assert r["j1_vs_control"]["upper"] < 0 < r["jk_vs_control"]["lower"]
    r = rows[("few-hard", "grouped-passk", 2)]
    assert r["j1_vs_control"]["lower"] < 0 < r["j1_vs_control"]["upper"]
    assert r["jk_vs_control"]["lower"] < 0 < r["jk_vs_control"]["upper"]
    r = rows[("many-hard", "grouped-passk", 15)]
    assert r["j1_vs_control"]["value"] < 0 < r["jk_vs_control"]["value"]
    for setting in ("few-hard", "many-hard"):
        assert all(k in (2, 3) for k in rows[(setting, "grpo", 4)]["k_star_end"])
    for r in rows.values():
        explained, against = (int(x) for x in r["against_explained"].split("/"))
        assert explained >= 0.85 * against


def test_what_the_readme_says_of_the_forecast_holds_in_results_json():
    # "calibrated at 5 and 10 steps but has almost no skill, and the conflict features add none".
    import json

    text = README.read_text()
    assert "calibrated at 5 and 10 steps but has almost no skill" in text
    horizons = json.loads((README.parent / "figures" / "results.json").read_text())["forecast"]["results"]["horizons"]
    for horizon, h in horizons.items():
        scores = h["scores"]
        if horizon in ("5", "10"):
            assert scores["logistic"]["ece"]["value"] <= 0.05
        assert scores["logistic"]["skill"]["value"] < 0.1
        assert abs(scores["no_k_star"]["skill"]["value"] - scores["logistic"]["skill"]["value"]) < 0.02
