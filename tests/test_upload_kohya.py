"""09_upload kohya, checked against kohya sd-scripts' own dataset rules as its docs and loader state them
(written out here; no kohya code is used): folder names, caption pairing, the TOML schema, paths that
resolve from any working folder, the fine-tuning metadata, and the Hub view of the folder."""

import io
import json
import os
import tomllib
from pathlib import Path

import numpy
import pytest
import yaml
from PIL import Image
from upload_fixtures import build_release_db, jsonl

from promptmill.release.check import check_folder
from promptmill.release.kohya import caption_with_trigger

# kohya's library/train_util.py IMAGE_EXTENSIONS (without the optional avif/jxl plugins).
KOHYA_IMAGE_EXTENSIONS = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".PNG", ".JPG", ".JPEG", ".WEBP", ".BMP"}

# kohya's documented dataset_config schema (docs/config_README-en.md, library/config_util.py): key -> type.
SUBSET_KEYS = {"color_aug": bool, "face_crop_aug_range": list, "flip_aug": bool, "num_repeats": int,
               "random_crop": bool, "shuffle_caption": bool, "keep_tokens": int, "keep_tokens_separator": str,
               "secondary_separator": str, "caption_separator": str, "enable_wildcard": bool,
               "token_warmup_min": int, "token_warmup_step": (int, float), "caption_prefix": str,
               "caption_suffix": str, "custom_attributes": dict, "resize_interpolation": str,
               "caption_dropout_every_n_epochs": int, "caption_dropout_rate": (int, float),
               "caption_tag_dropout_rate": (int, float)}
DREAMBOOTH_SUBSET_KEYS = {**SUBSET_KEYS, "caption_extension": str, "class_tokens": str, "cache_info": bool,
                          "image_dir": str, "is_reg": bool, "alpha_mask": bool}
FINETUNE_SUBSET_KEYS = {**SUBSET_KEYS, "metadata_file": str, "image_dir": str, "alpha_mask": bool}
DATASET_KEYS = {"batch_size": int, "bucket_no_upscale": bool, "bucket_reso_steps": int, "enable_bucket": bool,
                "max_bucket_reso": int, "min_bucket_reso": int, "validation_seed": int, "validation_split": float,
                "resolution": (int, list), "network_multiplier": float, "resize_interpolation": str}
GENERAL_KEYS = {**DATASET_KEYS, **SUBSET_KEYS, "caption_extension": str, "class_tokens": str, "cache_info": bool}


def schema_problems(config: dict, finetune: bool = False) -> list[str]:
    """Keys and types of a dataset_config against kohya's schema; required keys per subset kind."""
    problems = []

    def check(table: dict, allowed: dict, where: str):
        for key, value in table.items():
            if key not in allowed:
                problems.append(f"{where}: unknown key {key}")
            elif not isinstance(value, allowed[key]) or (allowed[key] is int and isinstance(value, bool)):
                problems.append(f"{where}: {key} is {type(value).__name__}")

    if set(config) - {"general", "datasets"}:
        problems.append(f"top level: {sorted(set(config) - {'general', 'datasets'})}")
    check(config.get("general", {}), GENERAL_KEYS, "general")
    subset_keys = FINETUNE_SUBSET_KEYS if finetune else DREAMBOOTH_SUBSET_KEYS
    for n, dataset in enumerate(config["datasets"]):
        check({k: v for k, v in dataset.items() if k != "subsets"}, {**DATASET_KEYS, **SUBSET_KEYS},
              f"datasets[{n}]")
        for m, subset in enumerate(dataset["subsets"]):
            check(subset, subset_keys, f"datasets[{n}].subsets[{m}]")
            required = "metadata_file" if finetune else "image_dir"
            if required not in subset:
                problems.append(f"datasets[{n}].subsets[{m}]: no {required}")
    return problems


def folder_mode_subsets(train_data_dir: Path) -> tuple[list[tuple[int, str, Path]], list[str]]:
    """kohya's generate_dreambooth_subsets_config_by_subdirs: (repeats, class tokens, folder) per
    sub-folder, and the names it would warn about ('ignore directory without repeats')."""
    subsets, warned = [], []
    for sub in sorted(train_data_dir.iterdir()):
        if not sub.is_dir():
            continue
        tokens = sub.name.split("_")
        try:
            repeats = int(tokens[0])
        except ValueError:
            warned.append(sub.name)
            continue
        if repeats >= 1:
            subsets.append((repeats, "_".join(tokens[1:]), sub))
    return subsets, warned


def captions_as_kohya_reads_them(folder: Path, caption_extension: str) -> dict[str, str]:
    """Each image of a DreamBooth folder -> its caption file's first line, or the class tokens fallback."""
    found = {}
    for image in sorted(p for p in folder.iterdir() if p.suffix in KOHYA_IMAGE_EXTENSIONS):
        caption = image.with_name(image.stem + caption_extension)
        found[image.name] = caption.read_text(encoding="utf-8").splitlines()[0] if caption.is_file() else None
    return found


@pytest.fixture
def ids(store):
    return build_release_db(store)


@pytest.mark.parametrize(("text", "trigger", "expected"), [
    ("sks-style, a dog", "sks", "sks, sks-style, a dog"),
    ("cat ears, black cat", "cat", "cat, cat ears, black cat"),
    ("a woman standing", "woman", "woman, a woman standing"),
    ("ohwx, fox,  OHWX , red fur", "ohwx", "ohwx, fox, red fur"),
    ("", "ohwx", "ohwx"),
])
def test_trigger_removal_takes_whole_tags_only(text, trigger, expected):
    assert caption_with_trigger(text, trigger) == expected


def test_folder_trains_as_kohya_reads_it_from_any_working_folder(tmp_path, invoke, store, ids, monkeypatch):
    out = tmp_path / "lora"
    invoke("09_upload", "kohya", out, "--trigger", "ohwx", "--repeats", "8", "--text-from", "caption:wd14")
    subsets, warned = folder_mode_subsets(out)
    assert warned == [] and [(r, t) for r, t, _ in subsets] == [(8, "ohwx")]
    captions = captions_as_kohya_reads_them(out / "8_ohwx", ".txt")
    train = ids_in_split(store, "train", ids)
    assert len(captions) == len(train) and None not in captions.values()
    assert "ohwx, fox, red_fur, outdoors" in captions.values()
    assert all(c.startswith("ohwx") and c.lower().count("ohwx") == 1 for c in captions.values())
    assert not any((out / "8_ohwx").glob("*.gif")) and not (out / "card").exists()

    config = tomllib.loads((out / "dataset_config.toml").read_text())
    assert schema_problems(config) == []
    assert "general" not in config  # nothing pinned over the user's command line
    [dataset] = config["datasets"]
    assert dataset["enable_bucket"] is True and dataset["resolution"] == 512
    [subset] = dataset["subsets"]
    assert subset["caption_extension"] == ".txt" and subset["class_tokens"] == "ohwx" and subset["num_repeats"] == 8
    elsewhere = tmp_path / "sd-scripts"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert os.path.isdir(subset["image_dir"]) and Path(subset["image_dir"]) == out / "8_ohwx"

    card = (out / "README.md").read_text()
    assert "--caption_extension .txt" in card and f"--train_data_dir {out}" in card


def ids_in_split(store, split, ids) -> set[int]:
    from promptmill.release.items import image_items

    return {item["image_id"] for item in image_items(store) if item["split"] == split}


def test_relative_paths_keep_tokens_and_validation_folder(tmp_path, invoke, store, ids, monkeypatch):
    out = tmp_path / "portable"
    invoke("09_upload", "kohya", out, "--trigger", "sks", "--relative-paths", "--keep-tokens", "1",
           "--validation", "validation", "--resolution", "768", "--bucket-no-upscale")
    config = tomllib.loads((out / "dataset_config.toml").read_text())
    assert schema_problems(config) == [] and config["general"] == {"keep_tokens": 1}
    [subset] = config["datasets"][0]["subsets"]
    assert subset["image_dir"] == "train/10_sks" and config["datasets"][0]["bucket_no_upscale"] is True
    monkeypatch.chdir(out)
    assert os.path.isdir(subset["image_dir"])
    subsets, warned = folder_mode_subsets(out / "train")
    assert warned == [] and [(r, t) for r, t, _ in subsets] == [(10, "sks")]
    validation = captions_as_kohya_reads_them(out / "validation" / "1_sks", ".txt")
    assert len(validation) == len(ids_in_split(store, "validation", ids)) == 2
    assert len(captions_as_kohya_reads_them(out / "train" / "10_sks", ".txt")) == len(ids_in_split(store, "train", ids))
    meta = yaml.safe_load((out / "README.md").read_text().split("---")[1])
    assert [(c["split"], c["path"][-1]) for c in meta["configs"][0]["data_files"]] == [
        ("train", "train/10_sks/metadata.jsonl"), ("validation", "validation/1_sks/metadata.jsonl")]


def test_several_training_splits_share_one_folder_and_metadata(tmp_path, invoke, store, ids):
    out = tmp_path / "ft"
    invoke("09_upload", "kohya", out, "--trigger", "ohwx", "--layout", "finetune", "--split", "train",
           "--split", "test")
    metadata = json.loads((out / "meta_cap.json").read_text())
    assert len(metadata) == len(ids_in_split(store, "train", ids) | ids_in_split(store, "test", ids))
    meta = yaml.safe_load((out / "README.md").read_text().split("---")[1])
    assert [c["split"] for c in meta["configs"][0]["data_files"]] == ["train"]


def test_finetune_layout_writes_kohya_metadata(tmp_path, invoke, store, ids):
    out = tmp_path / "ft"
    invoke("09_upload", "kohya", out, "--trigger", "ohwx", "--layout", "finetune", "--text-from", "caption:blip")
    config = tomllib.loads((out / "dataset_config.toml").read_text())
    assert schema_problems(config, finetune=True) == []
    [subset] = config["datasets"][0]["subsets"]
    metadata = json.loads(Path(subset["metadata_file"]).read_text())
    assert len(metadata) == len(ids_in_split(store, "train", ids))
    for key, entry in metadata.items():  # kohya joins a relative key to image_dir
        with Image.open(os.path.join(subset["image_dir"], key)) as image:
            assert entry["image_size"] == [image.width, image.height]
        assert entry["caption"].startswith("ohwx")
    tagged = [entry for entry in metadata.values() if "tags" in entry]
    assert tagged and all(entry["tags"] == "fox, red_fur, outdoors" for entry in tagged)  # trigger tag removed
    lines = jsonl(out / "meta_cap.jsonl")
    assert {line["image_path"]: {k: v for k, v in line.items() if k != "image_path"} for line in lines} == metadata
    assert not list((out / "images").glob("*.txt"))


def test_kohya_normalizes_images_kohya_would_read_wrong(tmp_path, invoke, store, run):
    from promptmill.collect.base import Collector, SourceInfo

    def encoded(image, fmt, **kwargs):
        buffer = io.BytesIO()
        image.save(buffer, format=fmt, **kwargs)
        return buffer.getvalue()

    rotated = Image.new("RGB", (40, 20), (200, 10, 10))
    exif = rotated.getexif()
    exif[0x0112] = 6  # rotate 90° clockwise to display
    sixteen = Image.fromarray(numpy.full((8, 8), 30000, dtype="uint16"))
    clear = Image.new("RGBA", (10, 10), (0, 0, 255, 0))
    collector = Collector(store, run, SourceInfo(kind="imagefolder", uri="odd", sha256="a" * 64))
    collector.add_image(1, encoded(rotated, "JPEG", exif=exif), "rotated.jpg", prompt="rotated")
    collector.add_image(2, encoded(sixteen, "PNG"), "sixteen.png", prompt="sixteen")
    collector.add_image(3, encoded(clear, "PNG"), "clear.png", prompt="clear")
    collector.finish(3)
    out = tmp_path / "odd"
    invoke("09_upload", "kohya", out, "--trigger", "t")
    written = {}
    for path in (out / "10_t").glob("*.png"):
        with Image.open(path) as image:
            prompt = path.with_suffix(".txt").read_text().strip().removeprefix("t, ")
            written[prompt] = (image.mode, image.size, image.getpixel((0, 0)))
    assert written["rotated"][:2] == ("RGB", (20, 40))
    assert written["sixteen"] == ("RGB", (8, 8), (117, 117, 117))
    assert written["clear"] == ("RGB", (10, 10), (255, 255, 255))
    params = json.loads(store.scalar("SELECT params FROM releases WHERE format = 'kohya'"))
    assert params["normalize"] is True


def test_hub_view_of_a_kohya_folder_is_images_with_captions(tmp_path, invoke, store, ids, monkeypatch):
    from datasets import load_dataset

    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "lora"
    invoke("09_upload", "kohya", out, "--trigger", "ohwx", "--text-from", "caption:wd14,prompt",
           "--license-name", "fox-license", "--license-link", "https://example.org/terms")
    meta = yaml.safe_load((out / "README.md").read_text().split("---")[1])
    assert meta["license"] == "other" and meta["license_name"] == "fox-license"
    assert meta["license_link"] == "https://example.org/terms"
    dataset = load_dataset(str(out))
    assert list(dataset) == ["train"] and set(dataset["train"].features) == {"image", "text"}
    rows = dataset["train"]
    assert len(rows) == len(ids_in_split(store, "train", ids))
    captions = {path.read_text().strip() for path in (out / "10_ohwx").glob("*.txt")}
    assert {row["text"] for row in rows} == captions
    assert all(row["image"].size[0] > 0 for row in rows)
    assert check_folder(out)[0] == []

    preview = tmp_path / "preview"  # the card of the recorded release, rendered again from the database
    invoke("09_upload", "card", preview, "--release", "lora")
    assert (preview / "README.md").read_text() == (out / "README.md").read_text()
