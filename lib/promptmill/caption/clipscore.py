"""CLIP score of a generated image against its prompt: the cosine of their CLIP embeddings.

Low scores flag generations that lost the prompt (noise, blank or off-topic
images); `--min-score` turns them into 'score' drop decisions. LAION's
CLIP-ViT-H-14 with 0.3 is a common noise filter; ViT-L/14 scores run lower.
"""

from __future__ import annotations

import click

from promptmill.caption.base import Item, Score, TorchCaptioner
from promptmill.core import save
from promptmill.core.store import Store

DEFAULT_MODEL = "openai/clip-vit-large-patch14"


class ClipScorer(TorchCaptioner):
    """Score generated images against their prompts (CLIP cosine); kind 'clip' in scores."""

    name, kind = "clipscore", "clip"
    default_model = DEFAULT_MODEL
    cli_options = (
        *TorchCaptioner.cli_options,
        click.option("--min-score", default=None, type=float,
                     help="Record a 'score' drop decision for images below this cosine (e.g. 0.3 with "
                          "laion/CLIP-ViT-H-14)."),
    )
    unhashed = ("device", "min_score")

    def load(self):
        from transformers import CLIPModel, CLIPProcessor

        self.clip, self.processor = self.load_pretrained("CLIP", CLIPModel, CLIPProcessor)

    def caption(self, items, images):
        return [Score(value) for value in score_batch(self.clip, self.processor, images, [i.prompt for i in items])]

    def pending(self, store, limit=None):
        return [Item(*row) for row in unscored_generations(store, self.params_hash, limit)]

    def finish(self, store, run):
        if self.options["min_score"] is not None:
            run.add("images dropped", drop_below(store, run, self.params_hash, self.options["min_score"]))


def score_batch(clip, processor, images: list, texts: list[str]) -> list[float]:
    """Cosine of each image with its own text (prompts longer than CLIP's 77 tokens are truncated)."""
    import torch

    inputs = processor(text=texts, images=images, return_tensors="pt", padding=True, truncation=True,
                       max_length=processor.tokenizer.model_max_length).to(clip.device)
    inputs["pixel_values"] = inputs["pixel_values"].to(clip.dtype)
    with torch.inference_mode():
        out = clip(**inputs)
    image = torch.nn.functional.normalize(out.image_embeds.float(), dim=-1)
    text = torch.nn.functional.normalize(out.text_embeds.float(), dim=-1)
    return (image * text).sum(dim=-1).tolist()


def unscored_generations(store: Store, hash_: str, limit: int | None = None) -> list[tuple]:
    """(image id, sha256, ext, prompt id, prompt text) of kept generated images not yet scored."""
    from promptmill.core.state import kept_images_sql

    done = set(store.execute("SELECT image_id, prompt_id FROM scores WHERE kind = 'clip' AND params_hash = ?",
                             (hash_,)))
    rows = store.execute(
        f"SELECT DISTINCT k.id, k.sha256, k.ext, g.prompt_id, g.prompt_text FROM ({kept_images_sql()}) k "
        "JOIN generations g ON g.image_id = k.id ORDER BY k.id, g.prompt_id, g.prompt_text").fetchall()
    seen, pending = set(), []
    for row in rows:
        key = (row[0], row[3])
        if key in done or key in seen:
            continue
        seen.add(key)
        pending.append(row)
    return pending[:limit] if limit else pending


def drop_below(store: Store, run, hash_: str, min_score: float) -> int:
    """A 'score' drop decision for every image whose CLIP score (these parameters) is below MIN_SCORE."""
    below = store.execute("SELECT image_id, min(value) FROM scores WHERE kind = 'clip' AND params_hash = ? "
                          "GROUP BY image_id HAVING min(value) < ?", (hash_, min_score)).fetchall()
    decisions = [{"item_type": "image", "item_id": image_id, "stage": "score", "verdict": "drop",
                  "scope": f"clipscore<{min_score:g}:{hash_}", "rule": "clipscore",
                  "reason": f"CLIP score {value:.4f} < {min_score:g}", "score": value} for image_id, value in below]
    with store.transaction() as conn:
        return save.save_decisions(conn, run, decisions)
