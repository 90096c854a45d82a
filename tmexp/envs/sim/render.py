"""A picture of a track for people: the road from above, the reference driver's line, and what the agent sees."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tmexp.envs.base import EnvSpec
from tmexp.envs.sim.core import track_world
from tmexp.envs.sim.driver import Lap
from tmexp.envs.sim.params import SimParams
from tmexp.envs.track import Track


def render_overview(
    track: Track, lap: Lap, spec: EnvSpec, params: SimParams, out: str | Path, n_images: int = 8
) -> Path:
    """Write a PNG: the track's raster from above with the driver's line, then a strip of observation images."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    world = track_world(track, spec, params)
    raster = world.raster
    xz = track.xz
    # Crop the raster to the track plus a little, so the view is not mostly margin.
    lo = np.floor((xz.min(axis=0) - 30 - raster.origin) / raster.cell).astype(int)
    hi = np.ceil((xz.max(axis=0) + 30 - raster.origin) / raster.cell).astype(int)
    crop = raster.gray[lo[1] : hi[1], lo[0] : hi[0]]
    x0, z0 = raster.origin + lo * raster.cell
    x1, z1 = raster.origin + hi * raster.cell

    picks = np.linspace(0, len(lap.images) - 1, min(n_images, len(lap.images))).astype(int)
    fig = plt.figure(figsize=(max(8, 1.6 * len(picks)), 10))
    grid = fig.add_gridspec(2, len(picks), height_ratios=[4, 1])
    ax = fig.add_subplot(grid[0, :])
    ax.imshow(crop, cmap="gray", vmin=0, vmax=255, origin="lower", extent=(x0, x1, z0, z1))
    ax.plot(xz[:, 0], xz[:, 1], color="tab:blue", lw=0.6, ls="--", label="centreline")
    if len(lap.positions):
        ax.plot(lap.positions[:, 0], lap.positions[:, 1], color="tab:red", lw=1.2, label="reference driver")
    ax.plot(*xz[0], "o", color="tab:green", label="start")
    status = f"{lap.race_time_ms / 1000:.2f} s" if lap.finished else "did not finish"
    ax.set_title(f"{track.name}: {track.length:.0f} m, reference driver {status}")
    ax.set_xlabel("x (m)")
    ax.set_ylabel("z (m)")
    ax.set_aspect("equal")
    ax.invert_yaxis()  # z down the page: the driver's right is the picture's right, as in the observations
    ax.legend(loc="best", fontsize=8)
    for k, i in enumerate(picks):
        sub = fig.add_subplot(grid[1, k])
        sub.imshow(lap.images[i][0], cmap="gray", vmin=0, vmax=255)
        sub.set_xticks([])
        sub.set_yticks([])
        sub.set_title(f"obs {i}", fontsize=8)
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
