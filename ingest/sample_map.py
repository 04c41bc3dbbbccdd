"""``ofa manifest show URL --map map.png``: every sample's footprint on a longitude/latitude plot, one colour
per sensor; no basemap (nothing is fetched from the internet)."""
from __future__ import annotations

import io
import math
from typing import Any

from ofa.ingest.storage import get_fs, join


def read_index(url: str, manifest: dict, storage_options: dict | None = None) -> Any:
    """The dataset's ``index.parquet`` as an Arrow table, or the same table built from the shards when the
    dataset has none (written before the index existed)."""
    import pyarrow.parquet as pq

    from ofa.ingest.sample_index import INDEX_NAME, index_table, read_metas

    fs, root = get_fs(url, storage_options)
    path = join(root, INDEX_NAME)
    if fs.exists(path):
        return pq.read_table(io.BytesIO(fs.cat_file(path)))
    return index_table(read_metas(url, manifest, storage_options))


def render_map(table: Any, title: str) -> bytes:
    """A PNG of the footprints (``bbox`` column) of ``table``, coloured by ``sensor``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    sensors = table.column("sensor").to_pylist()
    boxes = table.column("bbox").to_pylist()
    names = sorted({s for s in sensors if s is not None})
    colours = {name: plt.get_cmap("tab10")(i % 10) for i, name in enumerate(names)}
    fig, ax = plt.subplots(figsize=(8, 7))
    lats = []
    for sensor, box in zip(sensors, boxes):
        if box is None or sensor is None:
            continue
        w, s, e, n = box["xmin"], box["ymin"], box["xmax"], box["ymax"]
        ax.add_patch(Rectangle((w, s), e - w, n - s, facecolor=(*colours[sensor][:3], 0.25),
                               edgecolor=colours[sensor], linewidth=0.8))
        lats += [s, n]
        ax.update_datalim([(w, s), (e, n)])
    for name in names:
        ax.add_patch(Rectangle((0, 0), 0, 0, color=colours[name], label=f"{name} ({sensors.count(name)})"))
    ax.autoscale_view()
    if lats:  # degrees of longitude shrink with latitude: keep shapes true at the data's mid-latitude
        ax.set_aspect(1 / max(math.cos(math.radians((min(lats) + max(lats)) / 2)), 1e-3))
    ax.set_xlabel("longitude (°E)")
    ax.set_ylabel("latitude (°N)")
    ax.set_title(title)
    ax.grid(True, linewidth=0.3)
    if names:
        ax.legend(loc="best", fontsize=8)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()
