"""Compare a sweep's table with reference numbers from a YAML file.

Format::

    tolerance:                      # per metric: abs (absolute), rel (relative to the reference) or
                                    # abs_below (one-sided: at most that far below the reference)
      test/acc: {abs: 0.01}
      updates/density: {rel: 0.10}
    settings:                       # "key=value,key=value" -> metric -> reference value
      method=rw_target,paths=10: {test/acc: 0.8556, updates/density: 0.000235}
      method=full: {test/acc: 0.9791}

A setting matches every table row whose swept values include all of its ``key=value`` pairs.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml


def load_reference(path: Path) -> dict[str, Any]:
    data = yaml.safe_load(Path(path).read_text()) or {}
    settings = {}
    for key, metrics in (data.get("settings") or {}).items():
        pairs = dict(part.split("=", 1) for part in str(key).split(",") if "=" in part)
        settings[key] = (pairs, metrics)
    return {"tolerance": data.get("tolerance") or {}, "settings": settings}


def within(value: float, reference: float, tolerance: dict[str, float] | None) -> bool:
    if not tolerance:
        return True
    if "abs" in tolerance and abs(value - reference) > tolerance["abs"]:
        return False
    if "abs_below" in tolerance and value < reference - tolerance["abs_below"]:  # one-sided: better is always within
        return False
    if "rel" in tolerance and abs(value - reference) > tolerance["rel"] * abs(reference):
        return False
    return True


def compare(rows: Sequence[dict], reference: dict[str, Any]) -> list[dict]:
    """One entry per (row, metric) with a reference: measured mean, reference, delta, within tolerance."""
    out = []
    for row in rows:
        for name, (pairs, metrics) in reference["settings"].items():
            values = {**row.get("_values", {}), **{k: v for k, v in row.items() if not k.startswith("_")}}
            if not all(str(values.get(k)) == str(v) for k, v in pairs.items()):
                continue
            for metric, ref in metrics.items():
                measured = row.get(f"{metric} mean")
                entry = {"setting": name, "row": row, "metric": metric, "reference": ref, "measured": measured}
                if measured is not None:
                    entry["delta"] = measured - ref
                    entry["ok"] = within(measured, ref, reference["tolerance"].get(metric))
                out.append(entry)
    return out
