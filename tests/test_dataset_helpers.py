"""Shared builders for the dataset tests (no tests here): a tiny cell-like parts scene."""

from __future__ import annotations

import copy
import filecmp
import os
from pathlib import Path

from twin.datasets.spec import to_toml, validate_dataset_spec

BASE = {
    "name": "tiny-cell",
    "source": {"kvp": 80, "power_w": 2, "filter": "LE2"},
    "geometry": {"source_object_mm": 40.0, "object_detector_mm": 40.0, "objective": "flat-panel",
                 "projections": 12, "beam": "cone"},
    "detector": {"pixels": [24, 24], "pixel_um": 50.0, "exposure_s": 0.04, "flats": 2, "darks": 1},
    "phantom": {"kind": "parts", "parts": [
        {"name": "can", "shape": "cylinder", "material": "Al", "radius_mm": 0.26, "height_mm": 0.4,
         "sections": 128},
        {"name": "cathode", "shape": "cylinder", "material": "lfp_cathode", "radius_mm": 0.2,
         "height_mm": 0.1, "center_mm": [0.0, 0.0, -0.1], "sections": 128},
        {"name": "anode", "shape": "cylinder", "material": "graphite_anode", "radius_mm": 0.2,
         "height_mm": 0.14, "center_mm": [0.0, 0.0, 0.06], "sections": 128},
    ]},
    "recon": {"algorithm": "fdk"},
}

SPEC = {
    "name": "tiny",
    "count": 4,
    "seed": 11,
    "scenario": BASE,
    "parameters": {
        "source": {"kvp": {"uniform": [60, 100]}, "filter": {"choices": ["LE1", "LE2"]}},
        "detector": {"exposure_s": {"normal": [0.04, 0.005], "min": 0.03, "max": 0.05}},
        "phantom": {"parts": {"anode": {"radius_mm": {"uniform": [0.17, 0.2]}}}},
        "geometry": {"start_deg": {"uniform": [0, 360]}},
    },
    "voids": {"host": "anode", "count": {"integers": [1, 3]}, "radius_mm": {"uniform": [0.02, 0.04]}},
    "store": {"patches": {"size": [8, 8, 8], "count": 2}},
    "split": {"train": 0.5, "val": 0.25, "test": 0.25},
}


def tiny_dict(**changes):
    d = copy.deepcopy(SPEC)
    d.update(changes)
    return d


def tiny_spec(tmp_path=None, **changes):
    return validate_dataset_spec(tiny_dict(**changes), origin="<tiny>", base_dir=tmp_path or ".")


def write_spec_toml(path: Path, **changes) -> Path:
    path.write_text(to_toml(tiny_dict(**changes)), encoding="utf-8")
    return path


def worker_env() -> dict:
    env = dict(os.environ)
    repo = str(Path(__file__).resolve().parents[1])
    env["PYTHONPATH"] = repo + os.pathsep + env.get("PYTHONPATH", "")
    env.update(XRM_TWIN_THREADS="1", OMP_NUM_THREADS="1", XRM_TWIN_QUIET_ARCH="1")
    return env


def leftovers(out: Path) -> list[str]:
    """Temporary files or folders left in a dataset folder."""
    bad = [str(p) for p in out.rglob("*") if p.name.endswith(".part")]
    if (out / ".work").exists() and any((out / ".work").iterdir()):
        bad.append(str(out / ".work"))
    return bad


def same_files(a: Path, b: Path, names) -> list[str]:
    """Names whose bytes differ between folders a and b."""
    return [n for n in names if not filecmp.cmp(a / n, b / n, shallow=False)]
