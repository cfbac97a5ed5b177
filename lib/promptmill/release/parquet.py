"""Parquet shards with the images embedded, the layout the Hub viewer and ``load_dataset`` read directly.

``data/<split>-00000-of-0000N.parquet``; the image column is the ``datasets``
Image struct ``{bytes, path}``; row groups of 100 rows keep the viewer's
random access cheap; a shard closes before it passes ``max_shard_bytes`` of
image data. The ``datasets`` features go into the schema metadata
(``huggingface``) so the image column decodes as an image, not a struct, and
the card's ``dataset_info`` lists the splits with their sizes.
"""

from __future__ import annotations

import json

import click

from promptmill.core.progress import bar
from promptmill.release.images import DatasetsImageExporter, normalize_option, split_option, text_from_option
from promptmill.release.items import IMAGE_COLUMNS, metadata_row, split_sort_key, unique_stems

ROWS_PER_GROUP = 100
MB = 1_000_000
MAX_SHARD_MB = 500


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


def _row_group(store, normalize: bool, items: list[dict], names: list[str], group: list[int], schema) -> tuple:
    """One row group, built column by column (PNG/JPEG bytes are already compressed: snappy only),
    and what was written for each row."""
    import pyarrow as pa

    from promptmill.release.images import image_file

    written = [image_file(store, items[i], normalize) for i in group]
    rows = [metadata_row({**items[i], "width": w.width, "height": w.height}, i + 1) for i, w in zip(group, written)]
    data = [w.data if w.data is not None else store.blobs.path_for(items[i]["sha256"], items[i]["ext"]).read_bytes()
            for i, w in zip(group, written)]
    image = pa.StructArray.from_arrays(
        [pa.array(data, pa.binary()), pa.array([f"{names[i]}.{w.ext}" for i, w in zip(group, written)], pa.string())],
        fields=list(schema.field("image").type))
    columns = [image] + [pa.array([row[field.name] for row in rows], field.type) for field in list(schema)[1:]]
    return pa.Table.from_arrays(columns, schema=schema), written


class ParquetExporter(DatasetsImageExporter):
    """Parquet shards in OUT/data/ with the images embedded, 100 rows per row group."""

    name = "parquet"
    tasks = ("text-to-image", "image-to-text")
    options = (text_from_option("prompt"), split_option, normalize_option(False),
               click.option("--max-shard-mb", default=MAX_SHARD_MB, show_default=True, type=click.IntRange(1),
                            help="Start a new shard before a shard's images pass this size."))

    def write(self, store, folder):
        import pyarrow.parquet as pq

        items = self.select(store)
        max_shard_bytes = self.params.get("max_shard_mb", MAX_SHARD_MB) * MB
        schema = arrow_schema()
        sizes = dict(store.execute("SELECT id, bytes FROM images"))
        names = unique_stems(items)
        with bar(len(items), "parquet", "img") as progress:
            for split, shards in sorted(plan_shards(items, sizes, max_shard_bytes).items(),
                                        key=lambda kv: split_sort_key(kv[0])):
                for shard_index, indexes in enumerate(shards):
                    relative = shard_name(split, shard_index, len(shards))
                    with pq.ParquetWriter(folder.path(relative), schema, compression="snappy") as writer:
                        for start in range(0, len(indexes), ROWS_PER_GROUP):
                            group = indexes[start:start + ROWS_PER_GROUP]
                            table, written = _row_group(store, self.params.get("normalize", False), items, names, group,
                                                        schema)
                            writer.write_table(table, row_group_size=ROWS_PER_GROUP)
                            for index, file in zip(group, written):
                                item = items[index]
                                yield self.released(item, split, f"{relative}#{names[index]}.{file.ext}", file,
                                                    item["text"])
                            progress.update(len(group))

    def data_files(self, splits):
        return {split: [f"data/{split}-*"] for split in splits}

    def dataset_info(self, folder, splits):
        """Features, and each split's examples and bytes (the sizes of its shards), as the Hub lists them."""
        sizes = {split: 0 for split in splits}
        for path in sorted((folder.staging / "data").glob("*.parquet")):
            split = path.name.rsplit("-", 3)[0]
            sizes[split] += path.stat().st_size
        features = [{"name": "image", "dtype": "image"}] + [{"name": n, "dtype": k} for n, k in IMAGE_COLUMNS]
        return {"features": features,
                "splits": [{"name": split, "num_bytes": sizes[split], "num_examples": splits[split]}
                           for split in sorted(splits, key=split_sort_key)],
                "download_size": sum(sizes.values()), "dataset_size": sum(sizes.values())}
