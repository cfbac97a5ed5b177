"""Tiny randomly initialised models, saved exactly like hub models, for tests and the offline demo.

Each builder writes a folder that the steps load through the libraries' own loaders
(``from_pretrained``, ``onnxruntime.InferenceSession``), the same code path as
a real hub id. Weights are seeded, so a folder built twice holds the same model.
The tokenizer vocabularies are written here too: nothing is downloaded.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

SEED = 0
TINY_IMAGE = 32
_WORDS = ("a", "the", "of", "in", "on", "with", "and", "photo", "painting", "portrait", "cat", "dog",
          "red", "blue", "green", "city", "forest", "night", "light", "woman", "man", "house", "sky")


def _bytes_to_unicode() -> dict[int, str]:
    """The byte -> printable character table of GPT-2/CLIP byte-level BPE."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + \
        list(range(ord("®"), ord("ÿ") + 1))
    chars, extra = printable[:], 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            chars.append(256 + extra)
            extra += 1
    return {b: chr(c) for b, c in zip(printable, chars)}


def write_clip_tokenizer(folder: Path) -> int:
    """A CLIPTokenizer vocabulary: every byte alone and word-final, a few whole words. Returns its size."""
    folder.mkdir(parents=True, exist_ok=True)
    symbols = list(_bytes_to_unicode().values())
    vocab = symbols + [s + "</w>" for s in symbols]
    merges = []
    for word in _WORDS:
        pieces = list(word[:-1]) + [word[-1] + "</w>"]
        while len(pieces) > 1:
            merged = pieces[0] + pieces[1]
            merges.append(f"{pieces[0]} {pieces[1]}")
            if merged not in vocab:
                vocab.append(merged)
            pieces = [merged] + pieces[2:]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    merges = list(dict.fromkeys(merges))
    (folder / "vocab.json").write_text(json.dumps({tok: i for i, tok in enumerate(vocab)}), encoding="utf-8")
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")
    return len(vocab)


def _clip_tokenizer(folder: Path):
    from transformers import CLIPTokenizer

    write_clip_tokenizer(folder / "_vocab")
    tokenizer = CLIPTokenizer(str(folder / "_vocab" / "vocab.json"), str(folder / "_vocab" / "merges.txt"),
                              model_max_length=77)
    return tokenizer


def _clip_text_config(tokenizer):
    from transformers import CLIPTextConfig

    return CLIPTextConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, max_position_embeddings=77, projection_dim=32,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )


def _cleanup_vocab(folder: Path):
    import shutil

    shutil.rmtree(folder / "_vocab", ignore_errors=True)


def build_tiny_sd(folder: str | Path) -> Path:
    """A StableDiffusionPipeline with a tiny UNet, VAE and CLIP text encoder (32 px images)."""
    import torch
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextModel

    folder = Path(folder)
    torch.manual_seed(SEED)
    tokenizer = _clip_tokenizer(folder)
    text_encoder = CLIPTextModel(_clip_text_config(tokenizer))
    unet = UNet2DConditionModel(
        sample_size=TINY_IMAGE // 2, in_channels=4, out_channels=4, layers_per_block=1,
        block_out_channels=(8, 16), norm_num_groups=4, cross_attention_dim=32, attention_head_dim=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
    )
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(8, 16), norm_num_groups=4,
        layers_per_block=1, sample_size=TINY_IMAGE,
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
    )
    scheduler = DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                              clip_sample=False, set_alpha_to_one=False, steps_offset=1)
    pipe = StableDiffusionPipeline(
        unet=unet, vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, scheduler=scheduler,
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )
    pipe.save_pretrained(folder)
    _cleanup_vocab(folder)
    return folder


def build_tiny_clip(folder: str | Path) -> Path:
    """A CLIPModel with its processor (tokenizer + 32 px image processor)."""
    import torch
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor, CLIPVisionConfig

    folder = Path(folder)
    torch.manual_seed(SEED)
    tokenizer = _clip_tokenizer(folder)
    vision = CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                              image_size=TINY_IMAGE, patch_size=8, projection_dim=32)
    config = CLIPConfig.from_text_vision_configs(_clip_text_config(tokenizer), vision, projection_dim=32) \
        if hasattr(CLIPConfig, "from_text_vision_configs") else \
        CLIPConfig(text_config=_clip_text_config(tokenizer).to_dict(), vision_config=vision.to_dict(),
                   projection_dim=32)
    CLIPModel(config).save_pretrained(folder)
    image_processor = CLIPImageProcessor(size={"shortest_edge": TINY_IMAGE},
                                         crop_size={"height": TINY_IMAGE, "width": TINY_IMAGE})
    CLIPProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(folder)
    _cleanup_vocab(folder)
    return folder


def build_tiny_blip(folder: str | Path) -> Path:
    """A BlipForConditionalGeneration from a tiny config, with a BERT word-piece vocabulary."""
    import torch
    from transformers import (
        BertTokenizer,
        BlipConfig,
        BlipForConditionalGeneration,
        BlipImageProcessor,
        BlipProcessor,
    )

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(SEED)
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[DEC]"]
    vocab = specials + list(_WORDS) + [f"##{c}" for c in "abcdefghijklmnopqrstuvwxyz"] + \
        list("abcdefghijklmnopqrstuvwxyz.,")
    vocab_file = folder / "vocab.txt"
    vocab_file.write_text("\n".join(vocab) + "\n", encoding="utf-8")
    tokenizer = BertTokenizer(str(vocab_file), bos_token="[DEC]", do_lower_case=True)
    config = BlipConfig(
        text_config={
            "vocab_size": len(vocab), "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
            "num_attention_heads": 4, "max_position_embeddings": 64, "encoder_hidden_size": 32,
            "bos_token_id": vocab.index("[DEC]"), "pad_token_id": vocab.index("[PAD]"),
            "sep_token_id": vocab.index("[SEP]"), "eos_token_id": vocab.index("[SEP]"),
        },
        vision_config={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
                       "num_attention_heads": 4, "image_size": TINY_IMAGE, "patch_size": 8},
        projection_dim=32,
    )
    BlipForConditionalGeneration(config).save_pretrained(folder)
    image_processor = BlipImageProcessor(size={"height": TINY_IMAGE, "width": TINY_IMAGE})
    BlipProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(folder)
    return folder


# Tags of the tiny tagger: (name, category, which input channel drives it (BGR order), sign).
# A constant tag has channel None. Channel 2 is red (input is BGR), channel 0 blue.
TINY_TAGS = (
    ("general", 9, None, 2.0), ("sensitive", 9, None, -1.0), ("questionable", 9, None, -3.0),
    ("explicit", 9, None, -4.0),
    ("red_theme", 0, 2, 1.0), ("blue_theme", 0, 0, 1.0), ("dark_background", 0, 1, -1.0),
    (">_<", 0, None, 3.0), ("simple_background", 0, None, 1.5), ("no_humans", 0, None, -2.0),
    ("blue_(character)", 4, 0, 1.0), ("red_(character)", 4, 2, 1.0),
)


def build_tiny_tagger(folder: str | Path, size: int = TINY_IMAGE) -> Path:
    """A WD14-shaped ONNX tagger: NHWC float32 0..255 BGR in, sigmoid scores out, plus selected_tags.csv.

    Each tag's logit is a fixed function of one channel's mean (or a constant), so
    tests can reason about which tags a red or blue image gets."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    weights = np.zeros((3, len(TINY_TAGS)), dtype=np.float32)
    bias = np.zeros(len(TINY_TAGS), dtype=np.float32)
    for index, (_, _, channel, sign) in enumerate(TINY_TAGS):
        if channel is None:
            bias[index] = sign
        else:  # logit = sign * (mean - 160) / 16: high for a bright channel, low for a dark one
            weights[channel, index] = sign / 16.0
            bias[index] = -sign * 10.0
    graph = helper.make_graph(
        [
            helper.make_node("ReduceMean", ["input_1:0", "axes"], ["channel_mean"], keepdims=0),
            helper.make_node("MatMul", ["channel_mean", "weights"], ["logits_nobias"]),
            helper.make_node("Add", ["logits_nobias", "bias"], ["logits"]),
            helper.make_node("Sigmoid", ["logits"], ["predictions_sigmoid"]),
        ],
        "tiny_tagger",
        [helper.make_tensor_value_info("input_1:0", TensorProto.FLOAT, ["batch", size, size, 3])],
        [helper.make_tensor_value_info("predictions_sigmoid", TensorProto.FLOAT, ["batch", len(TINY_TAGS)])],
        initializer=[numpy_helper.from_array(np.array([1, 2], dtype=np.int64), "axes"),
                     numpy_helper.from_array(weights, "weights"), numpy_helper.from_array(bias, "bias")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, folder / "model.onnx")
    with open(folder / "selected_tags.csv", "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["tag_id", "name", "category", "count"])
        for index, (name, category, _, _) in enumerate(TINY_TAGS):
            writer.writerow([1000 + index, name, category, 100 - index])
    return folder


BUILDERS = {"tiny-sd": build_tiny_sd, "tiny-blip": build_tiny_blip, "tiny-wd14": build_tiny_tagger,
            "tiny-clip": build_tiny_clip}


def build_all(root: str | Path, names=None) -> dict[str, Path]:
    """Build the named tiny models (all by default) under ROOT/<name>; skip ones already there."""
    root = Path(root)
    built = {}
    for name in names or BUILDERS:
        folder = root / name
        marker = folder / ".complete"
        if not marker.exists():
            BUILDERS[name](folder)
            marker.write_text("ok\n")
        built[name] = folder
    return built
