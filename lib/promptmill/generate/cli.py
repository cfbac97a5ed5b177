"""05_generate: generate images for kept prompts with diffusers, seeded and resumable.

`diffusers` makes the images that kept prompts still lack for the given model and
parameters; `merge` folds per-node shard databases back into one. Several GPUs on
one machine: `accelerate launch steps/05_generate.py diffusers ...` (each rank takes
the prompts with id % WORLD_SIZE == RANK and writes to the same WAL database).
"""

import click

from promptmill.cli import BadInput, StepGroup, db_option, step_run

STEP = "05_generate"


@click.group(cls=StepGroup)
def cli():
    """Generate images for kept prompts with diffusers, seeded and resumable."""


# --- generate ---


@cli.command()
@db_option
@click.option("--model", default="stabilityai/stable-diffusion-2", show_default=True,
              help="Hub id or local folder of any diffusers text-to-image pipeline.")
@click.option("--revision", default=None, help="Hub revision (branch, tag or commit).")
@click.option("--scheduler", default=None,
              help="Scheduler class (e.g. DPMSolverMultistepScheduler) or alias ddim, pndm, lms, euler, "
                   "euler_a, dpm++, dpm++_sde, unipc, heun. Default: the model's own.")
@click.option("--steps", default=50, show_default=True, type=click.IntRange(1))
@click.option("--guidance", default=9.0, show_default=True, type=float, help="Classifier-free guidance scale.")
@click.option("--width", default=None, type=click.IntRange(8), help="Default: the model's native size.")
@click.option("--height", default=None, type=click.IntRange(8), help="Default: the model's native size.")
@click.option("--negative-prompt", default=None, help="The same negative prompt for every image.")
@click.option("--dtype", type=click.Choice(["auto", "fp16", "bf16", "fp32"]), default="auto", show_default=True,
              help="auto: fp16 on CUDA, fp32 on CPU.")
@click.option("--seed", default=0, show_default=True, type=int,
              help="Base seed; each image's seed is derived from it, the prompt id and the image index.")
@click.option("--batch-size", default=8, show_default=True, type=click.IntRange(1), help="Images per pipeline call.")
@click.option("--images-per-prompt", default=1, show_default=True, type=click.IntRange(1))
@click.option("--limit", default=None, type=click.IntRange(1), help="At most this many prompts this run.")
@click.option("--device", default="auto", show_default=True, help="auto: cuda:LOCAL_RANK when CUDA is there, else cpu.")
@click.option("--compile", "compile_unet", is_flag=True, help="torch.compile the denoiser (slow first batch).")
@click.option("--channels-last", is_flag=True, help="Channels-last memory format for the UNet and VAE.")
@click.option("--encode-workers", default=4, show_default=True, type=click.IntRange(1),
              help="Threads that PNG-encode and store images while the next batch runs.")
def diffusers(db_path, model, revision, scheduler, steps, guidance, width, height, negative_prompt, dtype, seed,
              batch_size, images_per_prompt, limit, device, compile_unet, channels_last, encode_workers):
    """Generate the images kept prompts still lack for this model and these parameters."""
    from promptmill.core.progress import bar
    from promptmill.engine.devices import pick_device, torch_dtype
    from promptmill.generate import diffusion as generate

    shard = generate.Shard.from_env()
    device = pick_device(device, shard.local_index)
    dtype_name, torch_dtype = torch_dtype(dtype, device)
    pipe = generate.load_pipeline(model, revision, scheduler, torch_dtype, device, compile_unet, channels_last)
    native = generate.default_size(pipe)
    settings = generate.Settings(
        model=model, revision=revision, scheduler=type(pipe.scheduler).__name__, steps=steps, guidance=guidance,
        width=width or native, height=height or native, negative_prompt=negative_prompt or None,
        dtype=dtype_name, seed=seed)
    extra = generate.row_params(pipe, settings, images_per_prompt, batch_size, compile_unet, channels_last)
    params = {**settings.__dict__, "params_hash": settings.params_hash(), "images_per_prompt": images_per_prompt,
              "batch_size": batch_size, "limit": limit, "device": device, "rank": shard.index,
              "world_size": shard.count, **extra}
    with step_run(db_path, STEP, "diffusers", params) as (store, run):
        jobs = generate.pending_jobs(store, settings, images_per_prompt, shard, limit)
        click.echo(f"05_generate: {len(jobs):,} images to make on {device} ({dtype_name}, rank {shard.index}/"
                   f"{shard.count}, params {settings.params_hash()})", err=True)
        with bar(len(jobs), desc="generate", unit="img") as progress:
            writer = generate.ImageWriter(store, run, settings, extra, generate.device_label(device), progress,
                                          encode_workers=encode_workers)
            try:
                generate.generate_images(pipe, jobs, settings, batch_size, writer)
            finally:
                writer.close()


@cli.command()
@db_option
@click.argument("shards", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False))
def merge(db_path, shards):
    """Fold SHARDS (per-node copies of this database, with their blobs) into this database."""
    from pathlib import Path

    from promptmill.generate import diffusion as generate

    if any(Path(shard).resolve() == Path(db_path).resolve() for shard in shards):
        raise BadInput("a shard cannot be the database it is merged into")
    with step_run(db_path, STEP, "merge", {"shards": list(shards)}) as (store, run):
        for shard in shards:
            generate.merge_shard(store, run, shard)
            run.add("shards merged")

