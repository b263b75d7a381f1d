"""Cheap completeness checks of the workflow's files.

Light on imports (no torch, no xarray) so that the workflow can run them on
every file of the grid each time it is parsed.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

FORMAT_VERSION = 1
REQUIRED_ATTRS = ("dataset", "algorithm", "architecture", "seed", "config")
REBUILD = "delete it and rerun the workflow to rebuild it"


def activation_problems(variables: dict, attrs: dict, dims: dict) -> list[str]:
    """What a complete activation file has and this one lacks."""
    problems = [f"attribute {a!r}" for a in REQUIRED_ATTRS if a not in attrs]
    if attrs.get("format_version") != FORMAT_VERSION:
        problems.append(f"format_version {FORMAT_VERSION}")
    if "label" not in variables or "correct" not in variables:
        problems.append("the label and correct coordinates")
    if dims.get("sample", 0) == 0:
        problems.append("samples")
    try:
        widths = json.loads(attrs.get("hidden_units", "[]"))
    except (TypeError, ValueError):
        widths = []
    if not widths:
        problems.append("attribute 'hidden_units'")
    elif "activation" in variables:
        shape = variables["activation"]
        if tuple(shape) != (dims.get("sample"), len(widths), widths[0]):
            problems.append(f"an activation of {len(widths)} layers of {widths[0]}")
    else:
        for i, width in enumerate(widths, 1):
            if variables.get(f"layer{i}") != (dims.get("sample"), width):
                problems.append(f"variable layer{i} of {width} units")
    return problems


def check_activation_file(path: str | Path) -> str | None:
    """Why the activation file at ``path`` is damaged, or None when it is
    absent or looks complete. Reads only the header: cheap enough to run on
    every file of the grid when the workflow is parsed."""
    import netCDF4

    path = Path(path)
    if not path.exists():
        return None
    try:
        with netCDF4.Dataset(path, "r") as nc:
            attrs = {k: nc.getncattr(k) for k in nc.ncattrs()}
            if isinstance(attrs.get("format_version"), np.generic):
                attrs["format_version"] = attrs["format_version"].item()
            dims = {k: len(d) for k, d in nc.dimensions.items()}
            variables = {k: v.shape for k, v in nc.variables.items()}
    except Exception as err:  # netCDF4 raises OSError or RuntimeError of HDF5
        return f"unreadable ({err})"
    problems = activation_problems(variables, attrs, dims)
    return f"incomplete (lacks {', '.join(problems)})" if problems else None
