import importlib.util

from conftest import ROOT


def test_collect_benchmark_quick_mode():
    spec = importlib.util.spec_from_file_location("collect_bench", ROOT / "benchmarks" / "collect_bench.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    result = bench.main(["--quick"])
    assert result["name"] == "01_collect text" and result["ratio"] > 0
    assert "rows/s" in result["figure"] and result["target"] == ">= 0.5"


def test_collect_benchmark_discord_export_streams():
    spec = importlib.util.spec_from_file_location("collect_bench", ROOT / "benchmarks" / "collect_bench.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    result = bench.main(["--quick", "--discord", "3000"])["discord"]
    assert "3,000 messages" in result["figure"] and "prompts added" in result["summary"]
    assert result["peak_mb"] < bench.PEAK_MEMORY_TARGET_MB
