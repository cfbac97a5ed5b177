import importlib.util

import paths


def test_llm_throughput_quick_runs_and_pays_once():
    spec = importlib.util.spec_from_file_location("llm_throughput", paths.ROOT / "benchmarks" / "llm_throughput.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    result = module.main(["--quick"])
    assert set(result) >= {"name", "figure", "baseline", "ratio", "target"}
    assert "0 paid twice" in result["figure"] and result["ratio"] > 1
