"""BLIP captions: batched beam search with a minimum and maximum length and an optional prefix.

BLIP continues the prefix ("a photograph of"), so the caption text starts with it.
"""

from __future__ import annotations

import click

from promptmill.caption.base import Caption, TorchCaptioner
from promptmill.core.errors import BadInput

DEFAULT_MODEL = "Salesforce/blip-image-captioning-large"


class BlipCaptioner(TorchCaptioner):
    """Caption kept images with BLIP (batched beam search); kind 'blip'."""

    name = kind = "blip"
    default_model = DEFAULT_MODEL
    cli_options = (
        *TorchCaptioner.cli_options,
        click.option("--num-beams", default=3, show_default=True, type=click.IntRange(1)),
        click.option("--min-length", default=5, show_default=True, type=click.IntRange(0), help="In tokens."),
        click.option("--max-length", default=40, show_default=True, type=click.IntRange(1), help="In tokens."),
        click.option("--prefix", default=None, help="Text the caption continues (e.g. 'a photograph of')."),
    )

    def __init__(self, model: str, revision: str | None = None, *, num_beams: int = 3, min_length: int = 5,
                 max_length: int = 40, prefix: str | None = None, **options):
        if min_length > max_length:
            raise BadInput("--min-length is larger than --max-length")
        super().__init__(model, revision, num_beams=num_beams, min_length=min_length, max_length=max_length,
                         prefix=prefix or None, **options)

    def load(self):
        from transformers import BlipForConditionalGeneration, BlipProcessor

        self.net, self.processor = self.load_pretrained("BLIP", BlipForConditionalGeneration, BlipProcessor)

    def caption(self, items, images):
        o = self.options
        texts = caption_batch(self.net, self.processor, images, o["prefix"], o["num_beams"], o["min_length"],
                               o["max_length"])
        return [Caption(text) for text in texts]


def caption_batch(captioner, processor, images: list, prefix: str | None, num_beams: int, min_length: int,
                   max_length: int) -> list[str]:
    """One caption per image, decoded without special tokens."""
    import torch

    text = [prefix] * len(images) if prefix else None
    inputs = processor(images=images, text=text, return_tensors="pt").to(captioner.device)
    inputs["pixel_values"] = inputs["pixel_values"].to(captioner.dtype)
    with torch.inference_mode():
        tokens = captioner.generate(**inputs, num_beams=num_beams, min_length=min_length, max_length=max_length)
    return [caption.strip() for caption in processor.batch_decode(tokens, skip_special_tokens=True)]
