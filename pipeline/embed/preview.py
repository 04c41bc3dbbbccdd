"""A map to glance at: the first three principal components of the embeddings as RGB, drawn at each
chip's WGS84 bounds, one panel per sensor (one PCA for all, so colours compare across panels)."""
from __future__ import annotations

import io
from typing import Iterable

import numpy as np
from matplotlib.collections import PolyCollection
from matplotlib.figure import Figure  # without pyplot: rendered by Agg, the user's backend left alone

#: at most this many chips are drawn (an even stride over the plan)
MAX_POINTS = 50_000


def pca_colours(x: np.ndarray) -> np.ndarray:
    """Rows of ``x`` [N, D] -> RGB [N, 3] in [0, 1]: the first three principal components, each
    stretched between its 2nd and 98th percentiles (fewer components than 3: the rest grey)."""
    x = np.asarray(x, dtype=np.float64)
    rgb = np.full((len(x), 3), 0.5)
    good = np.isfinite(x).all(axis=1)
    if good.sum() < 2:
        return rgb
    centred = x[good] - x[good].mean(axis=0)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    k = min(3, vt.shape[0])
    pcs = centred @ vt[:k].T
    signs = np.sign(pcs[np.abs(pcs).argmax(axis=0), range(k)])  # a fixed sign per component (SVD's is arbitrary)
    pcs *= np.where(signs == 0, 1.0, signs)
    lo, hi = np.percentile(pcs, 2, axis=0), np.percentile(pcs, 98, axis=0)
    rgb[np.flatnonzero(good)[:, None], np.arange(k)] = np.clip((pcs - lo) / np.where(hi > lo, hi - lo, 1.0), 0, 1)
    return rgb


def render(rows: Iterable[tuple[np.ndarray, np.ndarray, np.ndarray]], title: str = "") -> bytes:
    """PNG bytes of the map from ``(embedding [n, D], bbox [n, 4], sensor [n])`` chunks."""
    parts = list(rows)
    emb = np.concatenate([p[0] for p in parts]) if parts else np.zeros((0, 1))
    box = np.concatenate([p[1] for p in parts]) if parts else np.zeros((0, 4))
    sensor = np.concatenate([p[2] for p in parts]) if parts else np.zeros(0, str)
    rgb = pca_colours(emb)
    placed = np.isfinite(box).all(axis=1)
    sensors = sorted(set(sensor[placed].tolist())) or ["(no chip has a location)"]
    fig = Figure(figsize=(4.2 * len(sensors), 4.4))
    axes = fig.subplots(1, len(sensors), squeeze=False)
    for ax, name in zip(axes[0], sensors):
        pick = placed & (sensor == name)
        w, s, e, n = box[pick].T
        quads = np.stack([np.stack([w, s], -1), np.stack([e, s], -1), np.stack([e, n], -1), np.stack([w, n], -1)], 1)
        ax.add_collection(PolyCollection(quads, facecolors=rgb[pick], edgecolors="none"))
        if pick.any():
            pad_x, pad_y = (e.max() - w.min()) * 0.03 or 1e-4, (n.max() - s.min()) * 0.03 or 1e-4
            ax.set_xlim(w.min() - pad_x, e.max() + pad_x)
            ax.set_ylim(s.min() - pad_y, n.max() + pad_y)
        ax.set_aspect(1.0 / max(np.cos(np.deg2rad(np.nanmean(s) if pick.any() else 0.0)), 1e-3))
        ax.set_title(f"{name} ({int(pick.sum())} chips)", fontsize=10)
        ax.set_xlabel("longitude")
        ax.tick_params(labelsize=7)
        ax.ticklabel_format(useOffset=False)
    axes[0][0].set_ylabel("latitude")
    fig.suptitle(title or "embeddings: first three principal components as RGB", fontsize=11)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, metadata={"Software": None})
    return buf.getvalue()
