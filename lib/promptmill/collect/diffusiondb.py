"""DiffusionDB: its image parts and their link to the rows of its metadata table.

An image part is ``part-000001.zip`` (or its unpacked folder): PNGs plus
``part-000001.json``, which maps each file name to its prompt ``p``, seed ``se``,
steps ``st``, guidance ``c`` and sampler ``sa``. Collected with `collect zip` or
`collect imagefolder`, each image becomes a prompt with that meta. Rows of
`collect table --preset diffusiondb` name their image in ``image_name``: whichever is
collected second, :func:`link_tables_to_parts` adds an image origin for the table
row pointing at the part's image, so the two meet in either order.
"""

from __future__ import annotations

import json
import re
from pathlib import PurePosixPath

# 1 ddim … 8 k_lms, 9 others: the metadata table's sampler ids as names
SAMPLERS = {1: "ddim", 2: "plms", 3: "k_euler", 4: "k_euler_ancestral", 5: "k_heun", 6: "k_dpm_2",
            7: "k_dpm_2_ancestral", 8: "k_lms", 9: "others"}
PART_JSON = re.compile(r"^part-\d{6}\.json$")
# user_name of prompts whose Discord account is gone: no one author, so no author at all
DELETED_ACCOUNT = "deleted_account"


def part_files(names) -> list[str]:
    return [n for n in names if PART_JSON.match(PurePosixPath(n).name)]


def part_entries(tree, decode) -> dict[str, dict]:
    """Image member name -> its part-json entry, for every part-NNNNNN.json in the tree."""
    entries = {}
    for name in part_files(tree.names):
        folder = PurePosixPath(name).parent
        mapping = json.loads(decode(tree.read(name)))
        if isinstance(mapping, dict):
            for file_name, entry in mapping.items():
                if isinstance(entry, dict):
                    entries[(folder / file_name).as_posix().removeprefix("./")] = entry
    return entries


def entry_meta(name: str, entry: dict) -> dict:
    """The part entry as prompt meta, under the keys every source uses."""
    return {"seed": entry.get("se"), "steps": entry.get("st"), "cfg_scale": entry.get("c"),
            "sampler": entry.get("sa"), "image_name": PurePosixPath(name).name}


def link_tables_to_parts(store, run) -> None:
    """Image origins for DiffusionDB table rows whose image_name is an image collected from a part."""
    with store.transaction() as conn:
        before = conn.total_changes
        conn.execute(
            "INSERT INTO image_origins (image_id, source_id, position, locator, prompt_id, meta, run_id) "
            "SELECT o.image_id, p.source_id, p.position, p.locator, p.id, "
            "json_object('linked_from', o.source_id), ? "
            "FROM prompts p JOIN sources s ON s.id = p.source_id "
            "JOIN image_origins o ON json_extract(o.meta, '$.image_name') = p.locator "
            "WHERE s.kind = 'table' AND json_extract(s.options, '$.preset') = 'diffusiondb' "
            "AND json_extract(o.meta, '$.diffusiondb_part') IS NOT NULL "
            "ON CONFLICT (source_id, position) DO NOTHING", (run.id,))
        if added := conn.total_changes - before:
            run.add("table rows linked to part images", added)
