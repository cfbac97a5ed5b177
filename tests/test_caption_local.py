"""06_caption blip, wd14 and clipscore through the real loaders, on tiny random models."""

from __future__ import annotations

import importlib.util
import io
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from PIL import Image

import paths
from conftest import ROOT
from promptmill.caption.base import open_rgb
from promptmill.caption.wd14 import load_tagger, prepare
from promptmill.core.images import probe_image
from promptmill.core.state import kept_images
from tiny_models import build_all

torch.set_num_threads(1)


@pytest.fixture(scope="session")
def models(tmp_path_factory):
    return build_all(tmp_path_factory.getbasetemp() / "tiny-models")


def add_image(store, run, image: Image.Image, fmt: str = "PNG", data: bytes | None = None) -> int:
    """Store an image the way 01_collect does (blob + images row)."""
    if data is None:
        buffer = io.BytesIO()
        image.save(buffer, format=fmt)
        data = buffer.getvalue()
    probe = probe_image(data, "x." + fmt.lower())
    sha, _ = store.blobs.put(data, probe.ext)
    with store.transaction():
        store.execute("INSERT INTO images (sha256, ext, format, width, height, mode, bytes, run_id) "
                      "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                      (sha, probe.ext, probe.format, probe.width, probe.height, probe.mode, probe.bytes, run.id))
    return store.scalar("SELECT id FROM images WHERE sha256 = ?", (sha,))


def test_wd14_preprocessing_matches_the_reference_tagger(store, run):
    transparent = Image.new("RGBA", (20, 40), (255, 0, 0, 0))
    transparent.paste((255, 0, 0, 255), (0, 0, 20, 20))
    image_id = add_image(store, run, transparent)
    sha, ext = store.query("SELECT sha256, ext FROM images WHERE id = ?", (image_id,))[0].values()
    array = prepare(open_rgb(store.blobs, sha, ext), 40)
    assert array.shape == (40, 40, 3) and array.dtype == np.float32
    assert array[5, 15].tolist() == [0.0, 0.0, 255.0]  # red in BGR order
    assert array[35, 15].tolist() == [255.0, 255.0, 255.0]  # transparent part on white
    assert array[5, 2].tolist() == [255.0, 255.0, 255.0]  # left padding is white
    assert prepare(Image.new("RGB", (60, 30), (0, 0, 255)), 32).shape == (32, 32, 3)


def test_wd14_tags_scores_categories_and_ratings(invoke, store, run, models):
    red = add_image(store, run, Image.new("RGB", (40, 40), (255, 0, 0)))
    blue = add_image(store, run, Image.new("RGB", (40, 40), (0, 0, 255)), "JPEG")
    clear = add_image(store, run, Image.new("RGBA", (40, 40), (0, 0, 0, 0)))
    broken = add_image(store, run, None, "PNG", b"\x89PNG\r\n\x1a\n not really")
    result = invoke("06_caption", "wd14", "--model", models["tiny-wd14"], "--batch-size", "3",
                    "--blacklist", "simple_background")
    assert "CPUExecutionProvider" in result.output
    captions = {r["image_id"]: r for r in store.query("SELECT * FROM captions WHERE kind = 'wd14'")}
    assert set(captions) == {red, blue, clear}
    assert captions[red]["text"] == "red (character), dark background, red theme, >_<"
    assert captions[blue]["text"] == "blue (character), dark background, blue theme, >_<"
    # Transparent pixels become white: every channel bright, nothing dark.
    assert captions[clear]["text"] == "blue (character), red (character), red theme, blue theme, >_<"
    tags = store.query("SELECT tag, score, category, position FROM tags WHERE caption_id = ? ORDER BY position",
                       (captions[red]["id"],))
    assert [(t["tag"], t["category"]) for t in tags if t["category"] != "rating"] == [
        ("red (character)", "character"), ("dark background", "general"), ("red theme", "general"),
        (">_<", "general")]
    ratings = {t["tag"]: t["score"] for t in tags if t["category"] == "rating"}
    assert set(ratings) == {"general", "sensitive", "questionable", "explicit"} and ratings["general"] > 0.8
    assert store.count("item_errors", "reason = 'wd14: unreadable image' AND position = ?", (broken,)) == 1

    invoke("06_caption", "wd14", "--model", models["tiny-wd14"], "--blacklist", "simple background")
    assert store.count("captions") == 3 and store.count("item_errors") == 1
    invoke("06_caption", "wd14", "--model", models["tiny-wd14"], "--max-tags", "2", "--character", "0.999")
    short = store.query("SELECT text FROM captions WHERE image_id = ? ORDER BY id DESC LIMIT 1", (red,))[0]
    assert short["text"] == "dark background, red theme"


def test_wd14_tagger_reads_input_size_from_the_model(models):
    tagger = load_tagger(str(models["tiny-wd14"]))
    assert tagger.size == 32 and tagger.names[7] == ">_<" and tagger.names[4] == "red theme"


def test_blip_batched_with_prefix_and_resume(invoke, store, run, models):
    ids = [add_image(store, run, Image.new("RGB", (24 + i, 40), (40 * i, 90, 200))) for i in range(5)]
    invoke("06_caption", "blip", "--model", models["tiny-blip"], "--batch-size", "2", "--num-beams", "2",
           "--min-length", "3", "--max-length", "10", "--prefix", "a photo of")
    rows = store.query("SELECT * FROM captions WHERE kind = 'blip' ORDER BY image_id")
    assert [r["image_id"] for r in rows] == ids
    assert all(r["text"].startswith("a photo of") and r["model"] == str(models["tiny-blip"]) for r in rows)
    assert all(r["natural_key"] == f"blip:{r['image_id']}:{r['params_hash']}" for r in rows)
    assert '"num_beams": 2' in rows[0]["params"] and '"prefix": "a photo of"' in rows[0]["params"]

    # One image at a time gives the same captions as batches (another parameter set: max length differs).
    invoke("06_caption", "blip", "--model", models["tiny-blip"], "--batch-size", "1", "--num-beams", "2",
           "--min-length", "3", "--max-length", "10", "--prefix", "a photo of")
    assert store.count("captions") == 5
    invoke("06_caption", "blip", "--model", models["tiny-blip"], "--batch-size", "4", "--max-length", "8",
           "--min-length", "2", "--limit", "3")
    assert store.count("captions") == 8


def test_clipscore_scores_generations_and_drops_below_min(invoke, store, models):
    prompts = ROOT / "examples" / "prompts" / "openprompts.txt"
    lines = prompts.read_text(encoding="utf-8").splitlines()[:5]
    path = store.path.parent / "p.txt"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    invoke("01_collect", "text", path)
    invoke("05_generate", "diffusers", "--model", models["tiny-sd"], "--steps", "2", "--width", "32",
           "--height", "32")
    invoke("06_caption", "clipscore", "--model", models["tiny-clip"], "--batch-size", "2")
    scores = store.query("SELECT s.*, g.prompt_text, i.sha256, i.ext FROM scores s "
                         "JOIN generations g ON g.image_id = s.image_id AND g.prompt_id = s.prompt_id "
                         "JOIN images i ON i.id = s.image_id ORDER BY s.value")
    assert len(scores) == 5 and all(s["kind"] == "clip" and -1 <= s["value"] <= 1 for s in scores)

    from transformers import CLIPModel, CLIPProcessor
    model, processor = CLIPModel.from_pretrained(models["tiny-clip"]), CLIPProcessor.from_pretrained(models["tiny-clip"])
    first = scores[0]
    image = Image.open(store.blobs.path_for(first["sha256"], first["ext"])).convert("RGB")
    inputs = processor(text=[first["prompt_text"]], images=[image], return_tensors="pt", truncation=True,
                       padding=True)
    with torch.no_grad():
        out = model(**inputs)
    expected = torch.nn.functional.cosine_similarity(out.image_embeds, out.text_embeds).item()
    assert first["value"] == pytest.approx(expected, abs=1e-4)

    threshold = (scores[1]["value"] + scores[2]["value"]) / 2
    invoke("06_caption", "clipscore", "--model", models["tiny-clip"], "--min-score", str(threshold))
    invoke("06_caption", "clipscore", "--model", models["tiny-clip"], "--min-score", str(threshold))
    dropped = {r["item_id"] for r in store.query("SELECT item_id FROM decisions WHERE stage = 'score'")}
    assert dropped == {scores[0]["image_id"], scores[1]["image_id"]} and store.count("scores") == 5
    assert {row[0] for row in kept_images(store)} == {s["image_id"] for s in scores[2:]}


def test_caption_benchmark_quick_smoke():
    spec = importlib.util.spec_from_file_location("caption_bench", ROOT / "benchmarks" / "caption_bench.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    result = bench.main(["--quick"])
    assert result["name"] == "caption" and result["ratio"] > 0 and "images/s" in result["figure"]


TOY_CAPTIONER = """
import click
from PIL import ImageStat

from promptmill.caption.base import Caption, Captioner


class ToyCaptioner(Captioner):
    \"\"\"Name each image's strongest colour.\"\"\"

    name = kind = "toy"
    default_model = "toy-colours"
    cli_options = (click.option("--suffix", default="", help="Text after the colour."),)

    def load(self):
        self.colours = ("red", "green", "blue")

    def caption(self, items, images):
        results = []
        for image in images:
            means = ImageStat.Stat(image).mean
            colour = self.colours[means.index(max(means))]
            results.append(Caption(colour + self.options["suffix"], ((colour, round(max(means) / 255, 3), "general", 0),)))
        return results
"""


def install_toy_captioner(site):
    """A package installed the way pip leaves one: its module and a dist-info with an entry point."""
    site.mkdir()
    (site / "toy_captioner.py").write_text(textwrap.dedent(TOY_CAPTIONER), encoding="utf-8")
    info = site / "toy_captioner-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: toy-captioner\nVersion: 0.1\n", encoding="utf-8")
    (info / "entry_points.txt").write_text("[promptmill.captioners]\ntoy = toy_captioner:ToyCaptioner\n",
                                           encoding="utf-8")
    return {**os.environ, "PROMPTMILL_PROGRESS": "0",
            "PYTHONPATH": os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")]))}


def test_a_captioner_from_an_installed_package_runs_through_the_command(tmp_path, store, run):
    env = install_toy_captioner(tmp_path / "site")
    red = add_image(store, run, Image.new("RGB", (30, 20), (250, 10, 10)))
    blue = add_image(store, run, Image.new("RGB", (20, 30), (0, 20, 240)), "JPEG")
    broken = add_image(store, run, None, "PNG", b"\x89PNG\r\n\x1a\n cut short")

    listed = subprocess.run([sys.executable, "-m", "promptmill", "caption", "--help"], env=env, capture_output=True,
                            text=True, timeout=120)
    assert listed.returncode == 0 and "toy" in listed.stdout and "Name each image's strongest colour" in listed.stdout
    first = subprocess.run([sys.executable, "-m", "promptmill", "caption", "toy", "--db", str(store.path),
                            "--suffix", " thing", "--batch-size", "2"], env=env, capture_output=True, text=True,
                           timeout=120)
    assert first.returncode == 0, first.stderr
    assert "captions added 2" in first.stderr and "images unreadable 1" in first.stderr
    rows = store.query("SELECT c.image_id, c.text, c.model, c.params, c.natural_key, c.params_hash, t.tag, t.score "
                       "FROM captions c JOIN tags t ON t.caption_id = c.id WHERE c.kind = 'toy' ORDER BY c.image_id")
    assert [(r["image_id"], r["text"], r["tag"]) for r in rows] == [(red, "red thing", "red"),
                                                                   (blue, "blue thing", "blue")]
    assert all(r["model"] == "toy-colours" and r["natural_key"] == f"toy:{r['image_id']}:{r['params_hash']}"
               and '"suffix": " thing"' in r["params"] for r in rows)
    assert rows[0]["score"] == pytest.approx(250 / 255, abs=1e-3)
    assert store.count("item_errors", "reason = 'toy: unreadable image' AND position = ?", (broken,)) == 1
    recorded = store.query("SELECT params FROM runs WHERE step = '06_caption' AND command = 'toy'")
    assert '"suffix": " thing"' in recorded[0]["params"]

    # The numbered script runs the same command; same settings add nothing, new settings add a new set.
    for suffix, captions in ((" thing", 2), ("", 4)):
        result = subprocess.run([sys.executable, str(paths.STEPS_DIR / "06_caption.py"), "toy", "--db",
                                 str(store.path), "--suffix", suffix], env=env, capture_output=True, text=True,
                                timeout=120)
        assert result.returncode == 0, result.stderr
        assert store.count("captions", "kind = 'toy'") == captions and store.count("item_errors") == 1
