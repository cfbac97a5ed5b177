"""WD14 tags: SmilingWolf's ONNX taggers run through onnxruntime, preprocessed like the reference.

A tagger is a folder (or hub repo) with `model.onnx` and `selected_tags.csv`
(`tag_id,name,category,count`; category 9 rating, 0 general, 4 character).
Preprocessing matches the reference tagger: alpha composited on white, padded to
a square with white, resized (bicubic) to the model's input size, BGR, float32
0..255, NHWC. Ratings are kept apart from the caption text.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import click

from promptmill.caption.base import Caption, Captioner

DEFAULT_MODEL = "SmilingWolf/wd-swinv2-tagger-v3"
CATEGORY_NAMES = {0: "general", 4: "character", 9: "rating"}
# Tags whose underscores are part of the face, so they stay as they are.
KAOMOJI = frozenset({"0_0", "(o)_(o)", "+_+", "+_-", "._.", "<o>_<o>", "<|>_<|>", "=_=", ">_<", "3_3", "6_9",
                     ">_o", "@_@", "^_^", "o_o", "u_u", "x_x", "|_|", "||_||"})


@dataclass
class Tagger:
    session: object
    input_name: str
    size: int
    names: list[str]       # display names (underscores to spaces, kaomoji kept)
    categories: list[int]
    provider: str


@dataclass(frozen=True)
class Thresholds:
    general: float = 0.35
    character: float = 0.85
    blacklist: frozenset = frozenset()
    max_tags: int | None = None


class WD14Captioner(Captioner):
    """Tag kept images with a WD14 ONNX tagger; kind 'wd14', tags with scores and categories."""

    name = kind = "wd14"
    default_model = DEFAULT_MODEL
    cli_options = (
        click.option("--general", default=0.35, show_default=True, type=click.FloatRange(0, 1),
                     help="Threshold for general tags."),
        click.option("--character", default=0.85, show_default=True, type=click.FloatRange(0, 1),
                     help="Threshold for character tags."),
        click.option("--blacklist", default="", metavar="A,B", help="Tags never to keep (comma-separated)."),
        click.option("--max-tags", default=None, type=click.IntRange(1), help="Keep at most this many tags."),
        click.option("--threads", default=0, show_default=True, type=click.IntRange(0),
                     help="onnxruntime CPU threads (0: its default)."),
    )
    unhashed = ("threads",)

    def __init__(self, model: str, revision: str | None = None, *, general: float = 0.35, character: float = 0.85,
                 blacklist: str = "", max_tags: int | None = None, threads: int = 0):
        blocked = sorted({display_name(t.strip()) for t in blacklist.split(",") if t.strip()})
        super().__init__(model, revision, general=general, character=character, blacklist=blocked,
                         max_tags=max_tags, threads=threads)
        self.thresholds = Thresholds(general, character, frozenset(blocked), max_tags)

    def load(self):
        self.tagger = load_tagger(self.model, self.revision, self.options["threads"])
        note = "" if self.tagger.provider == "CUDAExecutionProvider" else \
            " (no CUDA provider: install onnxruntime-gpu for the GPU)"
        click.echo(f"06_caption wd14: onnxruntime runs on {self.tagger.provider}{note}", err=True)

    def row_params(self):
        return {**self.settings(), "provider": self.tagger.provider}

    def prepare(self, image):
        return prepare(image, self.tagger.size)

    def caption(self, items, arrays):
        results = []
        for image_scores in predict(self.tagger, arrays):
            tags, ratings = select_tags(self.tagger, image_scores, self.thresholds)
            results.append(Caption(", ".join(t[0] for t in tags),
                                   tuple((name, round(score, 5), category, i)
                                         for i, (name, score, category) in enumerate(tags))
                                   + tuple((name, round(score, 5), "rating", None) for name, score in ratings)))
        return results


def display_name(name: str) -> str:
    return name if name in KAOMOJI else name.replace("_", " ")


def tagger_files(model: str, revision: str | None) -> tuple[Path, Path]:
    """model.onnx and selected_tags.csv from a folder, else from the hub (or its offline cache)."""
    from promptmill.core.errors import BadInput

    folder = Path(model)
    if folder.is_dir():
        files = folder / "model.onnx", folder / "selected_tags.csv"
        missing = [f.name for f in files if not f.exists()]
        if missing:
            raise BadInput(f"{model}: missing {', '.join(missing)}")
        return files
    from huggingface_hub import hf_hub_download

    try:
        return tuple(Path(hf_hub_download(model, name, revision=revision))
                     for name in ("model.onnx", "selected_tags.csv"))
    except Exception as exc:  # any hub failure is a bad command here
        raise BadInput(f"cannot fetch tagger {model!r}: {str(exc).splitlines()[0]}") from exc


def choose_providers() -> list[str]:
    import onnxruntime

    available = onnxruntime.get_available_providers()
    return ["CUDAExecutionProvider", "CPUExecutionProvider"] if "CUDAExecutionProvider" in available \
        else ["CPUExecutionProvider"]


def load_tagger(model: str, revision: str | None = None, threads: int = 0) -> Tagger:
    import onnxruntime

    model_file, tags_file = tagger_files(model, revision)
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    session = onnxruntime.InferenceSession(str(model_file), options, providers=choose_providers())
    shape = session.get_inputs()[0].shape
    if len(shape) != 4 or shape[3] != 3 or not isinstance(shape[1], int):
        raise ValueError(f"{model}: expected an NHWC input with 3 channels, got {shape}")
    with open(tags_file, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    return Tagger(session, session.get_inputs()[0].name, shape[1], [display_name(r["name"]) for r in rows],
                  [int(r["category"]) for r in rows], session.get_providers()[0])


def prepare(image, size: int):
    """RGB PIL image -> size x size x 3 float32 BGR array, padded to a square with white."""
    import numpy as np
    from PIL import Image

    side = max(image.size)
    square = Image.new("RGB", (side, side), (255, 255, 255))
    square.paste(image, ((side - image.width) // 2, (side - image.height) // 2))
    if side != size:
        square = square.resize((size, size), Image.BICUBIC)
    return np.asarray(square, dtype=np.float32)[:, :, ::-1]


def predict(tagger: Tagger, arrays: list):
    """Scores (batch x tags) for preprocessed arrays, in one session call."""
    import numpy as np

    batch = np.ascontiguousarray(np.stack(arrays))
    return tagger.session.run(None, {tagger.input_name: batch})[0]


def select_tags(tagger: Tagger, scores, thresholds: Thresholds) -> tuple[list[tuple[str, float, str]],
                                                                         list[tuple[str, float]]]:
    """(tags for the caption: name, score, category; characters first, each by score) and (ratings)."""
    picked, ratings = [], []
    for index, score in enumerate(scores.tolist()):
        category, name = tagger.categories[index], tagger.names[index]
        if category == 9:
            ratings.append((name, score))
            continue
        if name in thresholds.blacklist:
            continue
        limit = thresholds.character if category == 4 else thresholds.general
        if score >= limit:
            picked.append((name, score, CATEGORY_NAMES.get(category, str(category))))
    picked.sort(key=lambda t: (t[2] != "character", -t[1]))
    if thresholds.max_tags is not None:
        picked = picked[:thresholds.max_tags]
    return picked, sorted(ratings, key=lambda t: -t[1])
