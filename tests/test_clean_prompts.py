"""02_clean prompts: every rule of every bundled preset, on real prompts where they exist, and the command."""

import json

import pytest

from conftest import seed_lines
from promptmill.clean.prompts import build_preset, load_preset
from promptmill.clean.rules import PresetError
from promptmill.core.state import kept_prompts

# rule name -> (a text the rule acts on, a text it leaves alone). Transforms: the first is rewritten,
# the second returned as is. Filters: the first is rejected, the second passes.
KAGGLE_CASES = {
    "unicode": ("a renaissance like oil portrait of The McDonald’s mascot grimace",
                "a renaissance like oil portrait of the mascot grimace"),
    "strip-aspect-ratio": ("ying yang fashion, elegant gown, intricate details, flowing gown --ar 2:3",
                           "a cat in a 2:3 ratio frame"),
    "strip-mj-parameters": ("elegant and luxury style --v 4 --q 2", "a well-lit t-shirt on a coat-hanger"),
    "strip-sd-parameters": ("a 1994 mercedes that has been converted into an rv seed:3526022321",
                            "a seed of a tree, steps of a temple"),
    "strip-camera-settings": ("85mm lens,f8, photography, f/9 natural light, ISO 64", "an F16 jet over a field"),
    "strip-hd": ("HDR, 32k, ultra hd photo", "a shepherd and his dog"),
    "strip-k-resolution": ("detailed painting 4k, 8 k", "a kingdom of kites"),
    "strip-trending": ("dramatic lighting, trending on artstation", "a trendy cafe on the street"),
    "strip-render-engines": ("particle effects, unreal engine 5, octane render", "an unreal dreamlike landscape"),
    "strip-award-winning": ("detailed, award winning, portrait", "a trophy winning dog"),
    "strip-sites": ("masterpiece, Artstation, CGsociety", "an art gallery near the train station"),
    "strip-artists": ("concept art by artgerm and greg rutkowski and alphonse mucha",
                      "portrait by gaston bussiere"),
    "whitespace": ("chaste maiden bathing in stream,  a swan is watching",
                   "chaste maiden bathing in stream, a swan is watching"),
    "tidy": ("figure of a girl , in full growth, for sketching,", "figure of a girl, in full growth"),
    "too-many-dashes": ("a - b - c - d - e - f - g", "a well-lit t-shirt on a coat-hanger"),
    "too-many-by": ("a by b by c by d by e", "painting by gaston bussiere and john collier"),
    "strip-camera-bodies": ("portrait of a young woman, canon eos r 6, DSLR Photograph", "a camera obscura"),
    "strip-links": ("a logo like https://example.org/logo.png in blue, dribbble.com", "a logo in blue on white"),
    "strip-file-formats": ("cute lilac dragon sticker, png", "a pink dragon"),
    "repeated-words": ("cat cat cat cat cat dog", "a cat and a dog"),
    "short-words": ("a 1 9 9 4 car in a b c", "a golden retriever in a meadow"),
    "too-many-commas": ("a, b, c, d, e, f, g, h, i, j, k", "a, b, c, d, e, f, g, h, i, j"),
    "length": ("a red fox", "a red fox in the snow at dawn"),
    "few-distinct-words": ("glowing glowing glowing mushrooms", "glowing mushrooms in a forest"),
    "first-person": ("can you give me 3d art under the title The Monumental Wilderness",
                     "Portrait of King Juan Carlos I, my hero academia style, despicable me"),
}
BASIC_CASES = {
    "unicode": ("“It’s cool huh? Zero point energy.”", "It's cool huh? Zero point energy."),
    "strip-urls": ("a cat http://example.com/cat.jpg sitting", "a cat sitting"),
    "collapse-repeated-words": ("character portrait portrait close up", "viking, viking boat, seaside"),
    "whitespace": ("Portrait of  celtic goddess", "Portrait of celtic goddess"),
    "tidy": ("annihilation, by quint buchholz,, owen gent,", "annihilation, by quint buchholz, owen gent"),
    "length": ("ok", "a red fox"),
}
DISCORD_CASES = {
    "bot-prompt": ("**a red fox in the snow** - <@123456789> (fast)", "a red fox in the snow"),
    "strip-commands": ("/imagine", "a castle / a keep"),
    "underscores-as-spaces": ("a_red_fox_in_the_snow", "a red fox ^_^ in the_snow"),
    "strip-prompt-label": ("prompt: a red fox", "a red fox, prompt book"),
    "unicode": ("a fox’s den", "a fox's den"),
    "strip-mentions": ("<@123456789> a red fox @everyone", "a red fox at the zoo"),
    "strip-links": ("look <https://cdn.discordapp.com/a.png> a fox", "look a fox"),
    "strip-emoji": ("a red fox 🦊 <:fox:1234567>", "a red fox"),
    "non-ascii-lines": ("красная лиса\na red fox", "a red fox\nin the snow"),
    "strip-negative-prompt": ("a red fox\nNegative prompt: blurry, ugly", "a red fox, not blurry"),
    "strip-parameters": ("a red fox --ar 16:9 --v 5 Steps: 20, Sampler: Euler a", "a red fox: a story"),
    "strip-markdown": ("a **red** fox `in` the ~~snow~~", "a red fox in the snow"),
    "whitespace": ("a red  fox", "a red fox"),
    "tidy": ("a red fox , ,", "a red fox"),
    "bot-noise": ("The queue is busy, please wait.", "waiting for the train"),
    "chat": ("can someone help me with img2img", "a fox helping a hare, thanks to the snow"),
    "length": ("ox", "lion"),
}


@pytest.mark.parametrize("preset_name, cases", [
    ("kaggle-i2p", KAGGLE_CASES), ("basic", BASIC_CASES), ("discord", DISCORD_CASES)])
def test_every_rule_fires_on_its_positive_and_not_on_its_negative(preset_name, cases):
    preset = load_preset(preset_name)
    transforms, filters = dict(preset.transforms), dict(preset.filters)
    assert set(cases) == set(transforms) | set(filters), "each rule needs a case"
    for name, (positive, negative) in cases.items():
        if name in transforms:
            assert transforms[name](positive) != positive, name
            assert transforms[name](negative) == negative, name
        else:
            assert filters[name](positive) is not None, name
            assert filters[name](negative) is None, (name, filters[name](negative))


@pytest.mark.parametrize("text, expected", [
    ("slash portrait guns and roses, intricate, highly detailed, digital painting, artstation, concept art, "
     "smooth, sharp focus, illustration, unreal engine 5, 8 k, art by artgerm and greg rutkowski and alphonse mucha",
     "slash portrait guns and roses, intricate, highly detailed, digital painting, concept art, smooth, "
     "sharp focus, illustration, art"),
    ("studio photography set of high detail irregular marble stones with gold lines stacked in impossible "
     "balance, 8k, elegant and luxury style --v 4 --q 2 --ar 2:3",
     "studio photography set of high detail irregular marble stones with gold lines stacked in impossible "
     "balance, elegant and luxury style"),
    ("a detailed portrait of crocodrile wearing sunglasses illustrator, by justin gerard and greg rutkowski, "
     "digital art, realistic painting, dnd, character design, trending on artstation",
     "a detailed portrait of crocodrile wearing sunglasses illustrator, by justin gerard, digital art, "
     "realistic painting, dnd, character design"),
])
def test_kaggle_strips_boilerplate_from_real_prompts(text, expected):
    verdict = load_preset("kaggle-i2p").judge(text)
    assert verdict.keep and verdict.text == expected


def test_kaggle_keeps_the_competition_style_prompts_and_strips_the_scraped_ones():
    preset = load_preset("kaggle-i2p")
    gpt4 = seed_lines("prompts_filtered_4.0.txt")
    kept = sum(preset.judge(line).keep for line in gpt4)
    assert kept / len(gpt4) > 0.97
    scraped = [line for line in seed_lines("900k_dedup_08_split_dedup_wt_wv.txt", 20_000)
               if any(b in line.lower() for b in ("greg rutkowski", "artstation", "octane render", "cgsociety"))]
    assert len(scraped) > 500
    verdicts = [preset.judge(line) for line in scraped]
    kept_texts = [v.text.lower() for v in verdicts if v.keep]
    assert 0.5 < len(kept_texts) / len(scraped) < 1
    for boilerplate in ("greg rutkowski", "artstation", "octane render", "cgsociety", "trending on"):
        # typos such as 'greg rutkowskiweta' survive; a handful in 20,000 lines
        assert sum(boilerplate in text for text in kept_texts) <= 2, boilerplate


def test_transforms_run_before_filters():
    # 280 characters as found, 17 words under the limit once the parameters are stripped.
    text = "a red fox in the snow " + "--seed 1 " * 30
    verdict = load_preset("kaggle-i2p").judge(text)
    assert len(text) > 256 and verdict.keep and verdict.text == "a red fox in the snow"


def test_text_that_cleans_to_nothing_is_dropped_as_empty():
    verdict = load_preset("discord").judge("<@123456789> https://example.com/x.png")
    assert (verdict.keep, verdict.rule) == (False, "empty")


@pytest.mark.parametrize("spec, message", [
    ({"rules": [{"name": "x", "use": "nope"}]}, "unknown use"),
    ({"rules": [{"name": "x", "use": "reject", "patterns": ["Canon"]}]}, "lower case"),
    ({"rules": [{"name": "x", "use": "length"}, {"name": "x", "use": "length"}]}, "twice"),
    ({"rules": [{"name": "x", "use": "length", "min": 3}]}, "bad parameters"),
    ({"rules": [{"name": "x", "use": "reject", "patterns": ["("]}]}, "bad regex"),
    ({"rules": []}, "no rules"),
])
def test_bad_presets_are_refused_with_a_reason(spec, message):
    with pytest.raises(PresetError, match=message):
        build_preset(spec, "0" * 8)


def collect(invoke, tmp_path, lines, name="prompts.txt"):
    path = tmp_path / name
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    invoke("01_collect", "text", path)
    return path


def test_prompts_command_decides_every_prompt_once(tmp_path, invoke, store):
    lines = seed_lines("900k_dedup_08_split_dedup_wt_wv.txt", 3000)
    collect(invoke, tmp_path, lines)
    result = invoke("02_clean", "prompts", "--preset", "kaggle-i2p")
    assert "prompts kept" in result.output or "prompts kept" in (result.stderr or "")
    rows = store.query("SELECT * FROM decisions WHERE item_type = 'prompt'")
    assert len(rows) == store.count("prompts") == 3000
    scope = rows[0]["scope"]
    assert scope.startswith("kaggle-i2p@") and len(scope) == len("kaggle-i2p@") + 8
    texts = dict(store.execute("SELECT id, text FROM prompts").fetchall())
    for row in rows:
        assert row["stage"] == "clean" and row["scope"] == scope
        if row["verdict"] == "keep":
            assert row["rule"] is None and row["value"] != texts[row["item_id"]]
        else:
            assert row["rule"] and row["reason"] and row["value"] is None
    rewritten = [r for r in rows if r["value"] is not None]
    assert rewritten and all(r["reason"].startswith("cleaned by ") for r in rewritten)
    state = {r["prompt_id"]: r for r in store.query("SELECT * FROM prompt_state")}
    for row in rewritten[:50]:
        assert state[row["item_id"]]["clean_text"] == row["value"]
    assert {pid for pid, _, _ in kept_prompts(store)} == {r["item_id"] for r in rows if r["verdict"] == "keep"}
    run = store.query("SELECT * FROM runs WHERE step = '02_clean'")[0]
    counts = json.loads(run["counts"])
    assert run["status"] == "ok" and counts["prompts kept"] + counts["prompts dropped"] == 3000

    invoke("02_clean", "prompts", "--preset", "kaggle-i2p")
    assert store.count("decisions") == 3000
    counts = json.loads(store.query("SELECT counts FROM runs ORDER BY id DESC LIMIT 1")[0]["counts"])
    assert counts == {"prompts already judged": 3000}


def test_source_option_language_filter_and_own_preset(tmp_path, invoke, store):
    collect(invoke, tmp_path, ["a red fox in the snow at dawn, oil painting"], "a.txt")
    collect(invoke, tmp_path, ["綿雪が降る林の中で踊っている雪のように髪が白いミク",
                               "PERSONAJE SUPER ECO, SUPER HEROE, NIÑO ANIMADO, CON TRAJE SUPER HEROE",
                               "a golden retriever sitting in an armchair by the fire"], "b.txt")
    invoke("02_clean", "prompts", "--preset", "basic", "--source", "1")
    assert store.count("decisions") == 1
    invoke("02_clean", "prompts", "--preset", "basic", "--source", "text", "--lang", "en")
    rows = store.query("SELECT p.text, d.verdict, d.rule, d.scope FROM decisions d "
                       "JOIN prompts p ON p.id = d.item_id WHERE d.scope LIKE '%+lang=en%' ORDER BY p.id")
    assert [(r["verdict"], r["rule"]) for r in rows] == [
        ("keep", None), ("drop", "language"), ("drop", "language"), ("keep", None)]
    own = tmp_path / "mine.toml"
    own.write_text('name = "mine"\n[[rules]]\nname = "no-foxes"\nuse = "reject"\nphrases = ["fox"]\n')
    invoke("02_clean", "prompts", "--preset", own)
    dropped = store.query("SELECT rule, reason FROM decisions WHERE scope LIKE 'mine@%' AND verdict = 'drop'")
    assert dropped == [{"rule": "no-foxes", "reason": "contains 'fox'"}]


def test_bad_commands_exit_2(tmp_path, invoke):
    collect(invoke, tmp_path, ["a red fox in the snow"])
    assert "no preset 'nope'" in invoke("02_clean", "prompts", "--preset", "nope", expect=2).output
    assert "no source" in invoke("02_clean", "prompts", "--preset", "basic", "--source", "9", expect=2).output
