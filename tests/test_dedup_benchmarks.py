import importlib.util

import pytest

from conftest import ROOT


def load(name):
    spec = importlib.util.spec_from_file_location(f"bench_{name}", ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_dedup_quality_quick_reports_recall_and_precision(capsys):
    result = load("dedup_quality").main(["--quick"])
    assert result["name"] == "dedup_quality" and result["ratio"] > 0
    table = capsys.readouterr().out
    assert "| exact + simhash wordset k=3 (the former default) |" in table and "| simhash char4 k=3 |" in table


@pytest.mark.slow
def test_dedup_speed_quick_checks_fingerprints_and_runs_the_step(capsys):
    rows = load("dedup_speed").main(["--quick"])
    assert [r["name"] for r in rows] == ["dedup_speed fingerprints", "dedup_speed step"]
    assert all(r["ratio"] > 0 for r in rows)
    assert "exact dropped" in capsys.readouterr().out


@pytest.mark.slow
def test_dedup_peers_quick_scores_each_method_on_the_same_copies(capsys):
    rows = load("dedup_peers").main(["--quick", "--show-false", "2"])
    assert [r["name"] for r in rows] == ["dedup_peers promptmill exact,cascade --lexical-only",
                                         "dedup_peers promptmill exact,simhash (wordset k=3)"]
    table = capsys.readouterr().out
    assert "| swap word |" in table and "2,000 texts (500 edited copies)" in table
    cascade, simhash = rows
    assert cascade["figure"] > simhash["figure"] and 0.9 < cascade["baseline"] <= 1


@pytest.mark.slow
def test_scale_bench_quick_reruns_are_noops(capsys):
    rows = load("scale_bench").main(["--quick"])
    assert [r["name"] for r in rows] == ["03_dedup exact,simhash, 20,000 prompts", "08_split assign, 20,000 prompts"]
    dedup, split = rows
    assert "exact dropped" in dedup["first"]["summary"] and "methods up to date" in dedup["again"]["summary"]
    assert "prompts assigned 20,000" in split["first"]["summary"] and "nothing new" in split["again"]["summary"]
    assert all(0 < r["first"]["peak_mb"] < 1000 and r["ratio"] > 0 for r in rows)
    assert "01_collect text, 20,000 prompts" in capsys.readouterr().out
