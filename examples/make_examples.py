#!/usr/bin/env python3
"""Write the small collect examples (Discord exports, images, an imagefolder, a ZIP) from the bundled prompts.

Deterministic: the same prompts and seed give byte-identical files, so the
committed outputs can be checked by re-running this script.
"""

from __future__ import annotations

import datetime as dt
import json
import random
import zipfile
from pathlib import Path

from PIL import Image, ImageDraw

from promptmill.core.resources import SCHEMA_DIR

HERE = Path(__file__).resolve().parent
SEED = 20240611
BOT = {"id": "1003336000000000001", "name": "dreambot", "discriminator": "0000", "nickname": "DreamBot",
       "isBot": True, "roles": [], "avatarUrl": "https://cdn.discordapp.com/embed/avatars/0.png"}
MIDJOURNEY = {"id": "936929561302675456", "name": "Midjourney Bot", "discriminator": "9282",
              "nickname": "Midjourney Bot", "isBot": True, "roles": []}
USERS = [{"id": str(800000000000000000 + 7919 * i), "name": name, "discriminator": "0000", "nickname": name,
          "isBot": False, "roles": []} for i, name in enumerate(["moth_lamp", "pixelfox", "quietriver", "lune"])]
NEGATIVES = ["blurry, lowres", "bad anatomy, extra fingers", "watermark, text", "jpeg artifacts"]
SAMPLERS = ["k_euler_a", "k_dpm_2", "ddim", "k_lms"]
CHATTER = ["anyone know how to get sharper eyes?", "that one is amazing", "lol", "try a lower cfg",
           "is the bot down?", "thanks!"]


def prompts(file_name: str, count: int, rng: random.Random) -> list[str]:
    folder = SCHEMA_DIR / "templates" if file_name == "augment_seeds.txt" else HERE / "prompts"
    lines = [line.strip() for line in (folder / file_name).read_text(encoding="utf-8").splitlines()]
    lines = [line for line in lines if 20 < len(line) < 220 and "*" not in line and "`" not in line]
    return rng.sample(lines, count)


def timestamps(count: int, rng: random.Random):
    moment = dt.datetime(2023, 3, 14, 18, 0, tzinfo=dt.timezone(dt.timedelta(hours=1)))
    for _ in range(count):
        moment += dt.timedelta(seconds=rng.randint(5, 400))
        yield moment.isoformat(timespec="milliseconds")


def message(index: int, when: str, author: dict, content: str, attachments=(), embeds=(), mentions=()) -> dict:
    return {"id": str(1085300000000000000 + index * 4099), "type": "Default", "timestamp": when,
            "timestampEdited": None, "callEndedTimestamp": None, "isPinned": False, "content": content,
            "author": author, "attachments": list(attachments), "embeds": list(embeds), "stickers": [],
            "reactions": [], "mentions": list(mentions)}


def attachment(index: int, name: str) -> dict:
    file_id = str(1085300000000001000 + index)
    return {"id": file_id, "url": f"https://cdn.discordapp.com/attachments/1000/{file_id}/{name}",
            "fileName": name, "fileSizeBytes": 400_000 + index * 37}


def export(channel: str, messages: list[dict]) -> dict:
    return {"guild": {"id": "1002292111942635562", "name": "Prompt Garden",
                      "iconUrl": "https://cdn.discordapp.com/embed/avatars/1.png"},
            "channel": {"id": str(1002300000000000000 + len(channel)), "type": "GuildTextChat",
                        "categoryId": "1002299000000000000", "category": "generate", "name": channel,
                        "topic": None},
            "dateRange": {"after": None, "before": None}, "exportedAt": "2023-03-15T09:00:00.000+00:00",
            "messages": messages, "messageCount": len(messages)}


def dreambot_export(rng: random.Random) -> dict:
    chosen = prompts("diffusiondb_style.txt", 24, rng)
    messages, when = [], timestamps(60, rng)
    for i, prompt in enumerate(chosen):
        user = rng.choice(USERS)
        messages.append(message(len(messages), next(when), user, f"/dream prompt:{prompt}"))
        args = (f"negative_prompt:{rng.choice(NEGATIVES)} seed:{rng.randint(1, 2**31)} steps:{rng.choice([20, 30, 50])} "
                f"cfg_scale:{rng.choice([6, 7.5, 9])} sampler:{rng.choice(SAMPLERS)}")
        content = (f"**Dreamt** in `{rng.uniform(2, 12):.2f}s` ```/dream prompt:{prompt} {args}``` "
                   f"for @{user['name']}")
        messages.append(message(len(messages), next(when), BOT, content, [attachment(i, f"dream_{i}.png")],
                                mentions=[user]))
        if i % 5 == 0:
            messages.append(message(len(messages), next(when), rng.choice(USERS), rng.choice(CHATTER)))
        if i % 7 == 0:
            messages.append(message(len(messages), next(when), BOT, "The queue is busy, please wait.",
                                    embeds=[{"title": "Queue", "description": "3 jobs ahead of you"}]))
    return export("dream-results", messages)


def midjourney_export(rng: random.Random) -> dict:
    chosen = prompts("openprompts.txt", 24, rng)
    messages, when = [], timestamps(60, rng)
    params = ["", " --ar 16:9", " --v 5 --q 2", " --ar 2:3 --stylize 250"]
    for i, prompt in enumerate(chosen):
        user = rng.choice(USERS)
        full = prompt + rng.choice(params)
        mode = rng.choice(["(fast)", "(relaxed)"])
        messages.append(message(len(messages), next(when), MIDJOURNEY,
                                f"**{full}** - <@{user['id']}> {mode}", [attachment(100 + i, f"grid_{i}.png")],
                                mentions=[user]))
        if i % 4 == 0:
            messages.append(message(len(messages), next(when), MIDJOURNEY,
                                    f"**{full}** - Image #{rng.randint(1, 4)} <@{user['id']}>",
                                    [attachment(200 + i, f"upscale_{i}.png")], mentions=[user]))
        if i % 6 == 0:
            messages.append(message(len(messages), next(when), rng.choice(USERS), rng.choice(CHATTER)))
            messages.append(message(len(messages), next(when), MIDJOURNEY, "",
                                    embeds=[{"title": "Job queued", "description": "Your job is queued"}]))
    return export("newbies-42", messages)


def messages_export(rng: random.Random) -> dict:
    chosen = prompts("augment_seeds.txt", 30, rng)
    messages, when = [], timestamps(60, rng)
    for i, prompt in enumerate(chosen):
        messages.append(message(len(messages), next(when), USERS[i % len(USERS)], prompt))
        if i % 5 == 0:
            messages.append(message(len(messages), next(when), BOT, "Saved your prompt to the list.",
                                    embeds=[{"title": "Saved", "description": prompt[:60]}]))
    return export("prompt-ideas", messages)


def draw(kind: int, size: tuple[int, int], rng: random.Random) -> Image.Image:
    """A small picture: a gradient with a few shapes."""
    width, height = size
    start, end = [tuple(rng.randint(0, 255) for _ in range(3)) for _ in range(2)]
    image = Image.new("RGB", size)
    pixels = image.load()
    for y in range(height):
        t = y / max(1, height - 1)
        color = tuple(int(a + (b - a) * t) for a, b in zip(start, end))
        for x in range(width):
            pixels[x, y] = color
    pen = ImageDraw.Draw(image)
    for _ in range(3 + kind % 3):
        x0, y0 = rng.randint(0, width - 20), rng.randint(0, height - 20)
        box = (x0, y0, x0 + rng.randint(10, width // 2), y0 + rng.randint(10, height // 2))
        fill = tuple(rng.randint(0, 255) for _ in range(3))
        (pen.ellipse if rng.random() < 0.5 else pen.rectangle)(box, fill=fill, outline=(0, 0, 0))
    return image


def write_images(folder: Path, captions: list[str], rng: random.Random, sidecars: bool) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    names = []
    for i, caption in enumerate(captions):
        ext = "png" if i % 2 == 0 else "jpg"
        name = f"img_{i:02d}.{ext}"
        image = draw(i, (96 + 16 * (i % 4), 96 + 8 * (i % 3)), rng)
        if ext == "png":
            image.save(folder / name, format="PNG", optimize=True)
        else:
            image.save(folder / name, format="JPEG", quality=85)
        if sidecars:
            (folder / name).with_suffix(".txt").write_text(caption + "\n", encoding="utf-8")
        names.append(name)
    return names


def main():
    rng = random.Random(SEED)
    discord = HERE / "discord"
    discord.mkdir(exist_ok=True)
    for name, build in (("dreambot", dreambot_export), ("midjourney", midjourney_export),
                        ("messages", messages_export)):
        text = json.dumps(build(rng), indent=2, ensure_ascii=False) + "\n"
        (discord / f"{name}.json").write_text(text, encoding="utf-8")

    captions = prompts("augment_seeds.txt", 8, rng)
    write_images(HERE / "images", captions, rng, sidecars=True)

    folder = HERE / "imagefolder"
    names = write_images(folder / "train", prompts("openprompts.txt", 5, rng), rng, sidecars=False)
    train_texts = prompts("openprompts.txt", 5, rng)
    (folder / "train" / "metadata.jsonl").write_text(
        "".join(json.dumps({"file_name": n, "text": t}) + "\n" for n, t in zip(names, train_texts)),
        encoding="utf-8")
    names = write_images(folder / "validation", ["", ""], rng, sidecars=False)
    (folder / "validation" / "metadata.jsonl").write_text(
        "".join(json.dumps({"file_name": n, "text": t}) + "\n"
                for n, t in zip(names, prompts("openprompts.txt", 2, rng))), encoding="utf-8")

    archives = HERE / "archives"
    archives.mkdir(exist_ok=True)
    with zipfile.ZipFile(archives / "images.zip", "w", zipfile.ZIP_DEFLATED) as archive:
        for path in sorted((HERE / "images").iterdir()):
            info = zipfile.ZipInfo(f"images/{path.name}", date_time=(2024, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, path.read_bytes())


if __name__ == "__main__":
    main()
