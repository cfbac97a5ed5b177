"""05_generate: generate images for kept prompts with diffusers, seeded and resumable.

`diffusers` makes the images that kept prompts still lack for the given model and
parameters. Several GPUs on one machine: `accelerate launch steps/05_generate.py
diffusers ...` (each rank takes the prompts with id % WORLD_SIZE == RANK and writes
to the same WAL database). A Ray cluster: `--engine ray`. Machines under a scheduler
without Ray: `--shard K/N --out-dir DIR` on each, then `promptmill ingest DIR`.
"""

import click

from promptmill.cli import StepGroup, db_option, step_run
from promptmill.engine.base import engine_options

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
@engine_options
def diffusers(db_path, model, revision, scheduler, steps, guidance, width, height, negative_prompt, dtype, seed,
              batch_size, images_per_prompt, limit, device, compile_unet, channels_last, encode_workers, engine,
              address, workers, num_gpus_per_worker, shard, out_dir):
    """Generate the images kept prompts still lack for this model and these parameters."""
    from promptmill.core.progress import bar
    from promptmill.engine.base import check_engine_options
    from promptmill.engine.devices import pick_device, torch_dtype
    from promptmill.generate import diffusion as generate

    plan_shard = check_engine_options(engine, shard, out_dir)
    requested_device = device
    rank = generate.Shard.from_env()
    device = pick_device(device, rank.local_index)
    dtype_name, torch_dtype = torch_dtype(dtype, device)
    pipe = generate.load_pipeline(model, revision, scheduler, torch_dtype, device, compile_unet, channels_last)
    native = generate.default_size(pipe)
    settings = generate.Settings(
        model=model, revision=revision, scheduler=type(pipe.scheduler).__name__, steps=steps, guidance=guidance,
        width=width or native, height=height or native, negative_prompt=negative_prompt or None,
        dtype=dtype_name, seed=seed)
    extra = generate.row_params(pipe, settings, images_per_prompt, batch_size, compile_unet, channels_last)
    params = {**settings.__dict__, "params_hash": settings.params_hash(), "images_per_prompt": images_per_prompt,
              "batch_size": batch_size, "limit": limit, "device": device, "rank": rank.index,
              "world_size": rank.count, **extra}
    with step_run(db_path, STEP, "diffusers", params) as (store, run):
        jobs = generate.pending_jobs(store, settings, images_per_prompt, rank, limit)
        if engine == "ray" or plan_shard is not None:
            from promptmill.engine.base import execute
            from promptmill.generate import work

            del pipe  # the workers load their own
            task = work.task(settings, extra, requested_device, compile_unet, channels_last, store.blobs, batch_size)
            execute(store, run, task, work.plan_rows(jobs), plan_shard, out_dir,
                    {"address": address, "workers": workers, "num_gpus_per_worker": num_gpus_per_worker})
            return
        click.echo(f"05_generate: {len(jobs):,} images to make on {device} ({dtype_name}, rank {rank.index}/"
                   f"{rank.count}, params {settings.params_hash()})", err=True)
        with bar(len(jobs), desc="generate", unit="img") as progress:
            writer = generate.ImageWriter(store, run, settings, extra, generate.device_label(device), progress,
                                          encode_workers=encode_workers)
            try:
                generate.generate_images(pipe, jobs, settings, batch_size, writer)
            finally:
                writer.close()
