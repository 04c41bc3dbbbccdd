"""Fixed 2-D sine-cosine position embeddings, computed for any grid (optionally GSD-scaled)."""
from __future__ import annotations

import torch


def sincos_1d(dim: int, pos: torch.Tensor) -> torch.Tensor:
    """Sin-cos code of positions ``pos`` [..., M] -> [..., M, dim] (dim even)."""
    omega = torch.arange(dim // 2, dtype=torch.float64, device=pos.device) / (dim / 2.0)
    omega = 1.0 / (10000.0**omega)  # [dim/2]
    out = pos.to(torch.float64).unsqueeze(-1) * omega  # [..., M, dim/2]
    return torch.cat([torch.sin(out), torch.cos(out)], dim=-1)


def sincos_2d(
    dim: int,
    grid_h: int,
    grid_w: int,
    scale: torch.Tensor | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Position embedding of a ``grid_h`` x ``grid_w`` patch grid, rows major.

    Returns [1, H*W, dim], or [N, H*W, dim] when ``scale`` [N] multiplies the coordinates
    (e.g. GSD / reference GSD, so a patch of 30 m sits further from its neighbours than 1 m).
    """
    if dim % 4:
        raise ValueError(f"sin-cos position embedding needs dim divisible by 4, got {dim}")
    ys, xs = torch.meshgrid(
        torch.arange(grid_h, dtype=torch.float64, device=device),
        torch.arange(grid_w, dtype=torch.float64, device=device),
        indexing="ij",
    )
    ys, xs = ys.reshape(1, -1), xs.reshape(1, -1)  # [1, L]
    if scale is not None:
        s = scale.to(device=device, dtype=torch.float64).reshape(-1, 1)  # [N, 1]
        ys, xs = ys * s, xs * s  # [N, L]
    emb = torch.cat([sincos_1d(dim // 2, ys), sincos_1d(dim // 2, xs)], dim=-1)  # [N|1, L, dim]
    return emb.to(dtype)
