#!/usr/bin/env python3
"""Images/s of 05_generate's batched path against one prompt at a time, in one process.

The baseline is what the origin scripts did: one `pipe(prompt)` call per prompt in
fp16, PIL output, PNG saved on the main thread. Ours is promptmill.generate: batched
prompts, per-image seeds, uint8 conversion on the GPU, PNG encoding, blob writing
and the database commit on threads while the next batch runs.

Full size is Stable Diffusion 2's architecture (UNet, VAE, OpenCLIP-H text encoder,
configs written out below) with random weights: the same compute as the real
weights, no download. It needs a CUDA GPU. `--quick` runs a tiny pipeline on the CPU.

    python benchmarks/generate_bench.py                 # 512 and 768 px on the GPU
    python benchmarks/generate_bench.py --quick         # smoke test, a few seconds
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))  # tiny_models

SD2_UNET = dict(
    sample_size=96, in_channels=4, out_channels=4, layers_per_block=2, act_fn="silu",
    block_out_channels=(320, 640, 1280, 1280), attention_head_dim=(5, 10, 20, 20), cross_attention_dim=1024,
    down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    norm_num_groups=32, norm_eps=1e-5, flip_sin_to_cos=True, freq_shift=0, use_linear_projection=True,
)
SD2_VAE = dict(
    in_channels=3, out_channels=3, latent_channels=4, layers_per_block=2, norm_num_groups=32, sample_size=768,
    block_out_channels=(128, 256, 512, 512), act_fn="silu", scaling_factor=0.18215,
    down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
)
SD2_TEXT = dict(vocab_size=49408, hidden_size=1024, intermediate_size=4096, num_hidden_layers=23,
                num_attention_heads=16, max_position_embeddings=77, hidden_act="gelu", projection_dim=512)
PROMPTS = ("a lighthouse on a cliff at dusk, oil painting", "portrait of an old fisherman, 85mm photo",
           "a cyberpunk street market in the rain, neon", "a bowl of ramen, studio lighting, top view",
           "an astronaut riding a horse on mars, concept art", "a cozy library with a fireplace, watercolor")


def sd2_random_pipeline(device: str, dtype):
    """SD2's full-size architecture with random weights (a byte-level vocabulary stands in for CLIP's)."""
    import torch
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    from tiny_models import write_clip_tokenizer

    vocab = Path(tempfile.mkdtemp(prefix="sd2-vocab-"))
    write_clip_tokenizer(vocab)
    tokenizer = CLIPTokenizer(str(vocab / "vocab.json"), str(vocab / "merges.txt"), model_max_length=77)
    torch.manual_seed(0)
    with torch.device(device):
        text = CLIPTextConfig(**SD2_TEXT, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                              pad_token_id=tokenizer.pad_token_id)
        pipe = StableDiffusionPipeline(
            unet=UNet2DConditionModel(**SD2_UNET), vae=AutoencoderKL(**SD2_VAE), text_encoder=CLIPTextModel(text),
            tokenizer=tokenizer, scheduler=DDIMScheduler(
                beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False,
                set_alpha_to_one=False, steps_offset=1, prediction_type="v_prediction"),
            safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipe.to(device, dtype)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def tiny_pipeline(device: str, dtype):
    from diffusers import StableDiffusionPipeline

    from tiny_models import build_tiny_sd

    folder = build_tiny_sd(Path(tempfile.mkdtemp(prefix="tiny-sd-")))
    pipe = StableDiffusionPipeline.from_pretrained(folder, torch_dtype=dtype).to(device)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def baseline(pipe, prompts, size, steps, out: Path) -> float:
    """Seconds for one pipe(prompt) call per prompt, each image saved as PNG right away."""
    import torch

    started = time.perf_counter()
    for index, prompt in enumerate(prompts):
        image = pipe(prompt, num_inference_steps=steps, guidance_scale=9.0, width=size, height=size,
                     generator=torch.Generator("cpu").manual_seed(index)).images[0]
        image.save(out / f"{index}.png")
    return time.perf_counter() - started


def batched(pipe, prompts, size, steps, batch_size, db: Path) -> float:
    """Seconds for promptmill.generate's path, database writes included."""
    from promptmill.core.runs import start_run
    from promptmill.core.store import open_store
    from promptmill.generate import diffusion as generate
    from promptmill.generate.seeds import image_seed

    store = open_store(db)
    settings = generate.Settings(model="sd2-random", revision=None, scheduler="DDIMScheduler", steps=steps,
                                 guidance=9.0, width=size, height=size, negative_prompt=None, dtype="bench",
                                 seed=0)
    try:
        with start_run(store, "bench", "generate", {}, argv=["bench"]) as run:
            prompt_ids = _bench_prompts(store, run, prompts)
            jobs = [generate.ImageJob(pid, text, 0, image_seed(settings.seed, pid, 0))
                    for pid, text in zip(prompt_ids, prompts)]
            started = time.perf_counter()
            writer = generate.ImageWriter(store, run, settings, {}, "bench")
            try:
                generate.generate_images(pipe, jobs, settings, batch_size, writer)
            finally:
                writer.close()
            return time.perf_counter() - started
    finally:
        store.close()


def _bench_prompts(store, run, prompts) -> list[int]:
    from promptmill.core.text import normalize, text_hash

    with store.transaction() as conn:
        source_id = conn.execute("INSERT INTO sources (kind, uri, sha256, run_id) VALUES ('bench', 'bench', ?, ?)",
                                 (str(run.id), run.id)).lastrowid
        return [conn.execute("INSERT INTO prompts (source_id, position, text, norm_hash, run_id) "
                             "VALUES (?, ?, ?, ?, ?)", (source_id, i, p, text_hash(normalize(p)), run.id)).lastrowid
                for i, p in enumerate(prompts)]


def main(argv=None) -> dict:
    import torch

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny pipeline on the CPU, 2 prompts, 2 steps")
    parser.add_argument("--sizes", default="512,768", help="image sizes in pixels")
    parser.add_argument("--prompts", type=int, default=24)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=0, help="0: 16 at <=512 px, 8 above")
    parser.add_argument("--channels-last", action="store_true")
    parser.add_argument("--compile", action="store_true", help="torch.compile the UNet (both paths; warm-ups compile)")
    args = parser.parse_args(argv)

    if args.quick:
        device, dtype, sizes, count, steps = "cpu", torch.float32, [32], 2, 2
        torch.set_num_threads(1)
        pipe = tiny_pipeline(device, dtype)
    else:
        if not torch.cuda.is_available():
            raise SystemExit("generate_bench needs a CUDA GPU for the full-size model; use --quick on the CPU")
        device, dtype, count, steps = "cuda", torch.float16, args.prompts, args.steps
        sizes = [int(s) for s in args.sizes.split(",")]
        pipe = sd2_random_pipeline(device, dtype)
    if args.channels_last:
        pipe.unet.to(memory_format=torch.channels_last)
        pipe.vae.to(memory_format=torch.channels_last)
    if args.compile:
        pipe.unet = torch.compile(pipe.unet)
    prompts = [PROMPTS[i % len(PROMPTS)] + f", variation {i}" for i in range(count)]
    rows = []
    with tempfile.TemporaryDirectory(prefix="generate-bench-") as tmp:
        tmp = Path(tmp)
        for size in sizes:
            batch_size = args.batch_size or (2 if args.quick else 16 if size <= 512 else 8)
            (tmp / f"base{size}").mkdir()
            baseline(pipe, prompts[:1], size, steps, tmp / f"base{size}")  # warm-up
            batched(pipe, prompts[:batch_size], size, steps, batch_size, tmp / f"warm{size}" / "p.db")
            if device == "cuda":
                torch.cuda.reset_peak_memory_stats()
            base_s = baseline(pipe, prompts, size, steps, tmp / f"base{size}")
            ours_s = batched(pipe, prompts, size, steps, batch_size, tmp / f"ours{size}" / "p.db")
            rows.append((size, batch_size, count / base_s, count / ours_s))
            peak = torch.cuda.max_memory_allocated() / 2**30 if device == "cuda" else 0.0
            print(f"{size} px, {steps} steps, {count} prompts: one at a time {count / base_s:.3f} images/s, "
                  f"batched x{batch_size} {count / ours_s:.3f} images/s, ratio {base_s / ours_s:.2f}, "
                  f"compile {args.compile}, channels-last {args.channels_last}, peak GPU memory {peak:.1f} GiB")
    size, batch_size, base_rate, ours_rate = rows[-1]
    result = {"name": "generate", "figure": f"{ours_rate:.3f} images/s at {size} px (batch {batch_size})",
              "baseline": f"{base_rate:.3f} images/s one prompt at a time",
              "ratio": round(min(o / b for _, _, b, o in rows), 2), "target": ">= 2.5 on one H200 (full size)"}
    print(result)
    return result


if __name__ == "__main__":
    main()
