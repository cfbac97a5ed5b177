import datetime as dt
import json

import pyarrow as pa
import pyarrow.parquet as pq

from conftest import run_script, seed_lines
from promptmill.core.text import hash_author, normalize, text_hash


def diffusiondb_parquet(path, prompts):
    n = len(prompts)
    table = pa.table({
        "image_name": [f"{i:08x}-0000.png" for i in range(n)], "prompt": prompts,
        "part_id": pa.array([1] * n, pa.uint16()), "seed": pa.array(range(1000, 1000 + n), pa.uint32()),
        "step": pa.array([50] * n, pa.uint16()), "cfg": pa.array([7.0] * n, pa.float32()),
        "sampler": pa.array([(i % 8) + 1 for i in range(n)], pa.uint8()),
        "width": pa.array([512] * n, pa.uint16()), "height": pa.array([768] * n, pa.uint16()),
        "user_name": [f"u{i % 3}" for i in range(n)],
        "timestamp": pa.array([dt.datetime(2022, 8, 10, 12, i % 60, tzinfo=dt.UTC) for i in range(n)],
                              pa.timestamp("us", tz="UTC")),
        "image_nsfw": pa.array([0.1] * n, pa.float32()), "prompt_nsfw": pa.array([0.02] * n, pa.float32()),
    })
    pq.write_table(table, path, row_group_size=40)


def test_diffusiondb_preset_keeps_generation_settings(tmp_path, invoke, store, monkeypatch):
    from promptmill.collect import table

    monkeypatch.setattr(table, "BATCH_ROWS", 32)  # several batches
    prompts = seed_lines("900k_dedup_08_split_dedup_wt_wv.txt", 100)
    path = tmp_path / "metadata.parquet"
    diffusiondb_parquet(path, prompts)
    invoke("01_collect", "table", path, "--preset", "diffusiondb")
    rows = store.query("SELECT * FROM prompts ORDER BY position")
    assert [r["text"] for r in rows] == [p.strip() for p in prompts]
    first = rows[0]
    meta = json.loads(first["meta"])
    assert meta["seed"] == 1000 and meta["steps"] == 50 and meta["sampler"] == "ddim" and meta["width"] == 512
    assert json.loads(rows[7]["meta"])["sampler"] == "k_lms"
    assert abs(meta["image_nsfw"] - 0.1) < 1e-6 and first["locator"] == "00000000-0000.png"
    assert first["author"] == hash_author("u0") and first["created_at"].startswith("2022-08-10T12:00")
    assert first["norm_hash"] == text_hash(normalize(prompts[0]))
    invoke("01_collect", "table", path, "--preset", "diffusiondb")
    assert store.count("prompts") == 100


def test_gustavosta_csv_tsv_jsonl(tmp_path, invoke, store):
    prompts = seed_lines("openprompts_dedup_085_075_diff_pprc_085wt_075wv.txt", 30)
    pq.write_table(pa.table({"Prompt": prompts}), tmp_path / "train.parquet")
    invoke("01_collect", "table", tmp_path / "train.parquet", "--preset", "gustavosta")
    csv_path = tmp_path / "p.csv"
    csv_path.write_text("id,prompt\n" + "".join(f'{i},"{p.replace(chr(34), chr(34) * 2)}"\n'
                                                for i, p in enumerate(prompts)), encoding="utf-8")
    invoke("01_collect", "table", csv_path, "--column", "prompt")
    tsv_path = tmp_path / "p.tsv"
    tsv_path.write_text("text\n" + "\n".join(p.replace("\t", " ") for p in prompts) + "\n", encoding="utf-8")
    invoke("01_collect", "table", tsv_path, "--column", "text")
    jsonl_path = tmp_path / "p.jsonl"
    jsonl_path.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in prompts[:10]) + "{oops\n[1]\n{}\n",
                          encoding="utf-8")
    invoke("01_collect", "table", jsonl_path)
    per_source = dict(store.execute("SELECT source_id, count(*) FROM prompts GROUP BY source_id").fetchall())
    assert per_source == {1: 30, 2: 30, 3: 30, 4: 10}
    errors = store.query("SELECT position, reason FROM item_errors WHERE source_id = 4 ORDER BY position")
    assert errors == [{"position": 11, "reason": "malformed JSON"}, {"position": 12, "reason": "not a JSON object"},
                      {"position": 13, "reason": "missing column"}]


def test_bad_rows_are_recorded(tmp_path, invoke, store):
    path = tmp_path / "bad.csv"
    path.write_bytes(b"prompt,n\nan owl at night,1\n,2\ncaf\xe9 in paris,3\n")
    invoke("01_collect", "table", path)
    assert [r["text"] for r in store.query("SELECT text FROM prompts")] == ["an owl at night"]
    reasons = {r["position"]: r["reason"] for r in store.query("SELECT position, reason FROM item_errors")}
    assert reasons[2] == "empty" and reasons[3] == "not utf-8"
    empty = tmp_path / "empty.csv"
    empty.write_bytes(b"")
    invoke("01_collect", "table", empty)
    assert store.scalar("SELECT items FROM sources WHERE uri = ?", (str(empty),)) == 0


def test_csv_without_the_column_exits_2(tmp_path):
    path = tmp_path / "p.csv"
    path.write_text("text\nhello\n", encoding="utf-8")
    db = tmp_path / "db" / "x.db"
    result = run_script("01_collect", "table", "--db", db, path, "--column", "prompt")
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1 and "prompt" in result.stderr
    assert not db.exists()
