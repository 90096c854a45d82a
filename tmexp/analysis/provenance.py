"""Tables of what the runs were: the resolved config keys that differ between groups, and the hardware."""

from __future__ import annotations

import pandas as pd

from tmexp.analysis import loading, stats


def config_diff(runset: loading.RunSet, groups: dict[str, list[str]]) -> tuple[pd.DataFrame, list[str]]:
    """Keys whose resolved values differ between groups (seed ignored); groups without a config listed apart."""
    flat, missing = {}, []
    for g, members in groups.items():
        config = runset.runs[members[0]].config
        if config is None:
            missing.append(g)
            continue
        flat[g] = {k: v for k, v in stats.flatten(config).items() if k.split(".")[-1] != "seed"}
    keys = sorted({k for f in flat.values() for k in f})
    rows = {}
    for key in keys:
        values = [repr(flat[g].get(key, "(absent)")) if key in flat[g] else "(absent)" for g in flat]
        if len(set(values)) > 1:
            rows[key] = {g: str(flat[g].get(key, "(absent)")) for g in flat}
    return pd.DataFrame.from_dict(rows, orient="index", columns=list(flat)), missing


HARDWARE_KEYS = [
    "host",
    "platform",
    "cpu",
    "cpu_count",
    "gpu",
    "torch",
    "python",
    "tmexp",
    "git_commit",
    "git_dirty",
    "started_at",
]


def hardware_table(runset: loading.RunSet) -> tuple[pd.DataFrame, list[str]]:
    rows, missing = {}, []
    for label, info in runset.runs.items():
        if info.meta is None:
            missing.append(label)
            continue
        rows[label] = {k: "-" if info.meta.get(k) is None else str(info.meta.get(k)) for k in HARDWARE_KEYS}
    return pd.DataFrame.from_dict(rows, orient="index", columns=HARDWARE_KEYS), missing


def collector_settings(runset: loading.RunSet) -> pd.DataFrame:
    """Config values that shape throughput (collector counts, game speed), where the configs have them."""
    wanted = ("gpu_collectors_count", "running_speed", "collectors", "num_collectors")
    rows = {}
    for label, info in runset.runs.items():
        if info.config:
            found = {k: v for k, v in stats.flatten(info.config).items() if k.split(".")[-1] in wanted}
            if found:
                rows[label] = found
    return pd.DataFrame.from_dict(rows, orient="index")
