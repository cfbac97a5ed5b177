"""The clean benchmark runs in its quick size and reports a figure and a ratio."""

import importlib.util

import paths


def test_clean_bench_quick_reports_figure_and_ratio():
    spec = importlib.util.spec_from_file_location("clean_bench", paths.ROOT / "benchmarks" / "clean_bench.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    result = module.main(["--quick", "-n", "5000"])
    assert "prompts per CPU-second" in result["figure"] and "prompts/s" in result["baseline"]
    assert result["ratio"] > 0 and result["target"]
