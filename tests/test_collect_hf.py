import io

import pytest
from PIL import Image

from conftest import run_script, seed_lines


@pytest.fixture
def dataset():
    datasets = pytest.importorskip("datasets")
    prompts = seed_lines("prompts_filtered_4.0.txt", 12)
    images = []
    for i in range(12):
        buffer = io.BytesIO()
        Image.new("RGB", (10 + i, 10), (i * 20, 30, 60)).save(buffer, format="PNG")
        images.append({"bytes": buffer.getvalue(), "path": f"img_{i}.png"})
    features = datasets.Features({"prompt": datasets.Value("string"), "image": datasets.Image(),
                                  "caption": datasets.Value("string")})
    return datasets.Dataset.from_dict({"prompt": prompts, "image": images,
                                       "caption": [f"caption {i}" for i in range(12)]}, features=features)


def test_saved_dataset_with_images(dataset, tmp_path, invoke, store):
    saved = tmp_path / "saved"
    dataset.save_to_disk(str(saved))
    invoke("01_collect", "hf", saved, "--prompt-column", "prompt", "--image-column", "image",
           "--text-column", "caption")
    rows = store.query("SELECT p.text, o.locator, c.text AS caption, i.format FROM image_origins o "
                       "JOIN prompts p ON p.id = o.prompt_id JOIN images i ON i.id = o.image_id "
                       "JOIN captions c ON c.image_id = i.id ORDER BY o.position")
    assert len(rows) == 12 and rows[0]["text"] == dataset[0]["prompt"] and rows[0]["format"] == "PNG"
    assert rows[3]["caption"] == "caption 3" and rows[3]["locator"] == "img_3.png"
    invoke("01_collect", "hf", saved, "--prompt-column", "prompt", "--image-column", "image",
           "--text-column", "caption")
    assert store.count("image_origins") == 12 and store.count("prompts") == 12


def test_parquet_folder_streaming_prompts(dataset, tmp_path, invoke, store):
    folder = tmp_path / "data"
    folder.mkdir()
    dataset.remove_columns(["image"]).to_parquet(str(folder / "train.parquet"))
    invoke("01_collect", "hf", folder, "--prompt-column", "prompt", "--streaming")
    assert [r["text"] for r in store.query("SELECT text FROM prompts ORDER BY position")] == dataset["prompt"]


def test_unknown_column_exits_2(dataset, tmp_path):
    saved = tmp_path / "saved"
    dataset.save_to_disk(str(saved))
    result = run_script("01_collect", "hf", "--db", tmp_path / "x.db", saved, "--prompt-column", "nope")
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1 and "nope" in result.stderr
