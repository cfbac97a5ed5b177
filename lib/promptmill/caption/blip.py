"""BLIP captions: batched beam search with a minimum and maximum length and an optional prefix.

BLIP continues the prefix ("a photograph of"), so the caption text starts with it.
"""

from __future__ import annotations

DEFAULT_MODEL = "Salesforce/blip-image-captioning-large"


def load_blip(model: str, revision: str | None, device: str, dtype):
    """The captioning model and its processor, by hub id or local folder."""
    from transformers import BlipForConditionalGeneration, BlipProcessor

    from promptmill.core.errors import BadInput

    try:
        processor = BlipProcessor.from_pretrained(model, revision=revision)
        captioner = BlipForConditionalGeneration.from_pretrained(model, revision=revision, dtype=dtype)
    except (OSError, ValueError) as exc:
        raise BadInput(f"cannot load BLIP model {model!r}: {str(exc).splitlines()[0]}") from exc
    return captioner.to(device).eval(), processor


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
