#!/usr/bin/env python3
"""Images/s of the local captioners, batched with threaded decoding, against one image at a time.

WD14: a WD14-shaped ONNX tagger (a small conv net with the real 448x448x3 NHWC
input and 6,000 tags, random weights) on the CPU. The baseline is the reference
tagger's loop: open, preprocess and run one image at a time (batch 1). Ours is
06_caption wd14's path: images decoded and preprocessed on threads a batch ahead,
one session call per batch.

BLIP: a small random BLIP, batched beam search against one image per call.

    python benchmarks/caption_bench.py            # 96 images
    python benchmarks/caption_bench.py --quick    # smoke test, a few seconds
"""

from __future__ import annotations

import argparse
import csv
import io
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))  # tiny_models

WD14_SIZE = 448
WD14_TAGS = 6000


def build_wd14_shaped(folder: Path, size: int = WD14_SIZE, tags: int = WD14_TAGS) -> Path:
    """Conv stem -> 3 strided convs -> global pool -> dense -> sigmoid, NHWC float32 in."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    channels = [3, 32, 64, 128, 256]
    nodes = [helper.make_node("Transpose", ["input"], ["x0"], perm=[0, 3, 1, 2])]
    inits = []
    for i in range(4):
        kernel = 7 if i == 0 else 3
        weight = (rng.standard_normal((channels[i + 1], channels[i], kernel, kernel)) * 0.02).astype(np.float32)
        inits.append(numpy_helper.from_array(weight, f"w{i}"))
        nodes += [helper.make_node("Conv", [f"x{i}", f"w{i}"], [f"c{i}"], strides=[4 if i == 0 else 2] * 2,
                                   pads=[kernel // 2] * 4),
                  helper.make_node("Relu", [f"c{i}"], [f"x{i + 1}"])]
    inits += [numpy_helper.from_array((rng.standard_normal((channels[-1], tags)) * 0.05).astype(np.float32), "dense"),
              numpy_helper.from_array(np.array([0, -1], dtype=np.int64), "flat")]
    nodes += [helper.make_node("GlobalAveragePool", ["x4"], ["pooled"]),
              helper.make_node("Reshape", ["pooled", "flat"], ["features"]),
              helper.make_node("MatMul", ["features", "dense"], ["logits"]),
              helper.make_node("Sigmoid", ["logits"], ["output"])]
    graph = helper.make_graph(nodes, "wd14_shaped",
                              [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", size, size, 3])],
                              [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["batch", tags])],
                              initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 8
    folder.mkdir(parents=True, exist_ok=True)
    onnx.save(model, folder / "model.onnx")
    with open(folder / "selected_tags.csv", "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["tag_id", "name", "category", "count"])
        writer.writerows([i, f"tag_{i}", 9 if i < 4 else 4 if i < 500 else 0, 1] for i in range(tags))
    return folder


def sample_images(store, count: int, side: int) -> list[tuple]:
    """(id, sha256, ext) rows of COUNT photo-like PNGs in the store's blob folder."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(1)
    rows = []
    for i in range(count):
        base = rng.integers(0, 255, (side // 8, side * 3 // 32, 3), dtype=np.uint8)
        image = Image.fromarray(base).resize((side * 3 // 4, side), Image.BILINEAR)
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        sha, _ = store.blobs.put(buffer.getvalue(), "png")
        rows.append((i, sha, "png"))
    return rows


def bench_wd14(store, rows, folder: Path, batch_size: int) -> tuple[float, float]:
    from promptmill.caption import base as caption_local
    from promptmill.caption import wd14 as caption_wd14

    tagger = caption_wd14.load_tagger(str(folder))
    caption_wd14.predict(tagger, [caption_wd14.prepare(caption_local.open_rgb(store.blobs, *rows[0][1:]), tagger.size)])
    started = time.perf_counter()
    for _, sha, ext in rows:
        array = caption_wd14.prepare(caption_local.open_rgb(store.blobs, sha, ext), tagger.size)
        caption_wd14.predict(tagger, [array])
    baseline = time.perf_counter() - started
    started = time.perf_counter()
    items = [caption_local.Item(*row) for row in rows]
    for _, arrays in caption_local.decoded_batches(store.blobs, items, batch_size,
                                                   lambda image: caption_wd14.prepare(image, tagger.size)):
        caption_wd14.predict(tagger, arrays)
    return baseline, time.perf_counter() - started


def bench_blip(store, rows, folder: Path, batch_size: int) -> tuple[float, float]:

    from promptmill.caption import base as caption_local
    from promptmill.caption import blip as caption_blip

    blip = caption_blip.BlipCaptioner(str(folder), device="cpu", dtype="fp32")
    blip.load()
    captioner, processor = blip.net, blip.processor
    images = [caption_local.open_rgb(store.blobs, sha, ext) for _, sha, ext in rows]
    caption_blip.caption_batch(captioner, processor, images[:1], None, 3, 5, 20)
    started = time.perf_counter()
    for image in images:
        caption_blip.caption_batch(captioner, processor, [image], None, 3, 5, 20)
    baseline = time.perf_counter() - started
    started = time.perf_counter()
    for i in range(0, len(images), batch_size):
        caption_blip.caption_batch(captioner, processor, images[i:i + batch_size], None, 3, 5, 20)
    return baseline, time.perf_counter() - started


def small_blip(folder: Path, quick: bool) -> Path:
    """The tiny test BLIP for --quick; otherwise a small one (384 px, 4 layers of width 256)."""
    from tiny_models import build_tiny_blip

    build_tiny_blip(folder)
    if quick:
        return folder
    import json

    import torch
    from transformers import BlipConfig, BlipForConditionalGeneration, BlipImageProcessor

    config = json.loads((folder / "config.json").read_text())
    config["text_config"].update(hidden_size=256, intermediate_size=1024, num_hidden_layers=4,
                                 num_attention_heads=4, encoder_hidden_size=256)
    config["vision_config"].update(hidden_size=256, intermediate_size=1024, num_hidden_layers=4,
                                   num_attention_heads=4, image_size=384, patch_size=16)
    torch.manual_seed(0)
    BlipForConditionalGeneration(BlipConfig(text_config=config["text_config"],
                                            vision_config=config["vision_config"])).save_pretrained(folder)
    BlipImageProcessor(size={"height": 384, "width": 384}).save_pretrained(folder)
    return folder


def main(argv=None) -> dict:
    import torch

    from promptmill.core.store import open_store

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="few small images, tiny models")
    parser.add_argument("--images", type=int, default=96)
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args(argv)
    count, side, size, tags = (8, 96, 64, 200) if args.quick else (args.images, 768, WD14_SIZE, WD14_TAGS)
    batch_size = 4 if args.quick else args.batch_size
    torch.set_num_threads(1 if args.quick else torch.get_num_threads())
    with tempfile.TemporaryDirectory(prefix="caption-bench-") as tmp:
        tmp = Path(tmp)
        store = open_store(tmp / "p.db")
        try:
            rows = sample_images(store, count, side)
            wd14_base, wd14_ours = bench_wd14(store, rows, build_wd14_shaped(tmp / "wd14", size, tags), batch_size)
            blip_rows = rows[:max(4, count // 4)]
            blip_base, blip_ours = bench_blip(store, blip_rows, small_blip(tmp / "blip", args.quick),
                                              min(batch_size, 8))
        finally:
            store.close()
    print(f"wd14 ({size}x{size}x3, {tags:,} tags, {count} images of {side * 3 // 4}x{side}): batch 1 "
          f"{count / wd14_base:.1f} images/s, batched x{batch_size} + threaded decoding {count / wd14_ours:.1f} "
          f"images/s, ratio {wd14_base / wd14_ours:.2f}")
    print(f"blip ({len(blip_rows)} images): one by one {len(blip_rows) / blip_base:.1f} images/s, batched "
          f"{len(blip_rows) / blip_ours:.1f} images/s, ratio {blip_base / blip_ours:.2f}")
    result = {"name": "caption", "figure": f"wd14 {count / wd14_ours:.1f} images/s batched (CPU)",
              "baseline": f"wd14 {count / wd14_base:.1f} images/s at batch 1; blip ratio {blip_base / blip_ours:.2f}",
              "ratio": round(wd14_base / wd14_ours, 2), "target": ">= 1.5 (CPU, 2 cores)"}
    print(result)
    return result


if __name__ == "__main__":
    main()
