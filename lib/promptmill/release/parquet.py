"""Parquet shards with the images embedded, the layout the Hub viewer and ``load_dataset`` read directly.

``data/<split>-00000-of-0000N.parquet``; the image column is the ``datasets``
Image struct ``{bytes, path}``; row groups of 100 rows keep the viewer's
random access cheap; a shard closes before it passes ``max_shard_bytes`` of
image data. The ``datasets`` features go into the schema metadata
(``huggingface``) so the image column decodes as an image, not a struct.
"""

from __future__ import annotations

import json

from promptmill.core.progress import bar
from promptmill.core.store import Store
from promptmill.release.base import IMAGE_COLUMNS, ExportFolder, metadata_row, split_sort_key, unique_stems

ROWS_PER_GROUP = 100
MAX_SHARD_BYTES = 500 * 1000 * 1000


def features_dict() -> dict:
    """The ``datasets`` Features of an image release, as its JSON form."""
    features: dict = {"image": {"_type": "Image"}}
    for name, kind in IMAGE_COLUMNS:
        features[name] = {"dtype": kind, "_type": "Value"}
    return features


def arrow_schema():
    import pyarrow as pa

    types = {"string": pa.string(), "int64": pa.int64(), "float64": pa.float64()}
    fields = [pa.field("image", pa.struct([("bytes", pa.binary()), ("path", pa.string())]))]
    fields += [pa.field(name, types[kind]) for name, kind in IMAGE_COLUMNS]
    return pa.schema(fields, metadata={"huggingface": json.dumps({"info": {"features": features_dict()}})})


def plan_shards(items: list[dict], sizes: dict[int, int], max_shard_bytes: int) -> dict[str, list[list[int]]]:
    """split -> shards, each a list of item indexes, closing a shard before it passes the byte budget."""
    shards: dict[str, list[list[int]]] = {}
    filled: dict[str, int] = {}
    for index, item in enumerate(items):
        split, size = item["split"], sizes[item["image_id"]]
        split_shards = shards.setdefault(split, [[]])
        if split_shards[-1] and filled.get(split, 0) + size > max_shard_bytes:
            split_shards.append([])
            filled[split] = 0
        split_shards[-1].append(index)
        filled[split] = filled.get(split, 0) + size
    return shards


def shard_name(split: str, index: int, total: int) -> str:
    return f"data/{split}-{index:05d}-of-{total:05d}.parquet"


def _row_group(store: Store, items: list[dict], names: list[str], group: list[int], schema):
    """One row group, built column by column (PNG/JPEG bytes are already compressed: snappy only)."""
    import pyarrow as pa

    rows = [metadata_row(items[index], index + 1) for index in group]
    image = pa.StructArray.from_arrays(
        [pa.array([store.blobs.path_for(items[i]["sha256"], items[i]["ext"]).read_bytes() for i in group], pa.binary()),
         pa.array([f"{names[i]}.{items[i]['ext']}" for i in group], pa.string())],
        fields=list(schema.field("image").type))
    columns = [image] + [pa.array([row[field.name] for row in rows], field.type) for field in list(schema)[1:]]
    return pa.Table.from_arrays(columns, schema=schema)


def write_parquet(store: Store, folder: ExportFolder, items: list[dict],
                  max_shard_bytes: int = MAX_SHARD_BYTES) -> list[dict]:
    """Write every split's shards; return the release items."""
    import pyarrow.parquet as pq

    schema = arrow_schema()
    sizes = dict(store.execute("SELECT id, bytes FROM images"))
    names = unique_stems(items)
    released = []
    with bar(len(items), "parquet", "img") as progress:
        for split, shards in sorted(plan_shards(items, sizes, max_shard_bytes).items(),
                                    key=lambda kv: split_sort_key(kv[0])):
            for shard_index, indexes in enumerate(shards):
                relative = shard_name(split, shard_index, len(shards))
                with pq.ParquetWriter(folder.path(relative), schema, compression="snappy") as writer:
                    for start in range(0, len(indexes), ROWS_PER_GROUP):
                        group = indexes[start:start + ROWS_PER_GROUP]
                        writer.write_table(_row_group(store, items, names, group, schema),
                                           row_group_size=ROWS_PER_GROUP)
                        for index in group:
                            item = items[index]
                            released.append({"item_type": "image", "item_id": item["image_id"], "split": split,
                                             "file_name": f"{relative}#{names[index]}.{item['ext']}",
                                             "sha256": item["sha256"], "text": item["text"]})
                        progress.update(len(group))
    return released
