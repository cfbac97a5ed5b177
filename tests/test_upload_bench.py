"""The export benchmark's quick mode runs and reports a figure and a ratio for both formats."""

import importlib.util

import paths


def test_export_bench_quick():
    spec = importlib.util.spec_from_file_location("export_bench", paths.ROOT / "benchmarks" / "export_bench.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    rows = module.main(["--quick"])
    assert [row["name"] for row in rows] == ["export imagefolder", "export parquet"]
    for row in rows:
        assert row["ratio"] > 0 and row["figure"].endswith("images/s") and row["images"] == 300
