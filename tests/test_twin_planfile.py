"""A plan resolved here and simulated in a process without SpekPy, xraydb or trimesh."""

import subprocess
import sys
import textwrap

import h5py
import numpy as np

from tests.twin_helpers import parts_scenario
from twin.plan import resolve
from twin.planfile import save_plan
from twin.simulate import simulate_plan

PARTS = [{"shape": "tube", "material": "SS304", "radius_mm": 1.0, "inner_radius_mm": 0.8, "height_mm": 1.5},
         {"shape": "sphere", "material": "Al", "radius_mm": 0.5, "subdivisions": 3}]

RUNNER = textwrap.dedent("""
    import sys, importlib.abc
    class Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path, target=None):
            if name.split(".")[0] in ("spekpy", "xraydb", "trimesh"):
                raise ImportError(f"{name} is not available on this node")
            return None
    sys.meta_path.insert(0, Block())
    from twin.planfile import load_plan
    from twin.simulate import simulate_plan
    simulate_plan(load_plan(sys.argv[1]), sys.argv[2], arch="cpu", quiet=True)
""")


def test_plan_file_runs_without_host_libraries(tmp_path):
    spec = parts_scenario(PARTS, pixels=(40, 32), pixel_um=80.0, beam="cone", projections=6,
                          source_object_mm=20.0, object_detector_mm=20.0,
                          detector={"ideal": False, "exposure_s": 0.01})
    plan = resolve(spec)
    save_plan(plan, tmp_path / "plan.pkl")
    simulate_plan(plan, tmp_path / "here", arch="cpu", quiet=True)
    script = tmp_path / "node.py"
    script.write_text(RUNNER)
    subprocess.run([sys.executable, str(script), str(tmp_path / "plan.pkl"), str(tmp_path / "node")],
                   check=True)
    with h5py.File(tmp_path / "here" / "projections.h5") as a, h5py.File(tmp_path / "node" / "projections.h5") as b:
        da, db = a["entry/instrument/detector/data"][...], b["entry/instrument/detector/data"][...]
    assert da.dtype == np.uint16 and np.array_equal(da, db)


def small_zoom_plan():
    from twin.scenario import load_scenario

    spec = load_scenario("nimh-zoom-120cycles", [
        "geometry.projections=4", "detector.pixels=[64, 64]", "geometry.binning=8",
        "phantom.voi={center_mm = [2.5, 0.0, 10.0], size_mm = [0.9, 0.9, 0.9]}"])
    return resolve(spec)


def test_recipe_plan_rebuilds_the_same_phantom_without_host_libraries(tmp_path):
    """A recipe plan carries no grids; the node rebuilds them and gets the same scan."""
    plan = small_zoom_plan()
    save_plan(plan, tmp_path / "grids.pkl")
    save_plan(plan, tmp_path / "recipe.pkl", phantom="recipe")
    grids_mib = (tmp_path / "grids.pkl").stat().st_size / 2**20
    recipe_mib = (tmp_path / "recipe.pkl").stat().st_size / 2**20
    assert recipe_mib < grids_mib / 20, (recipe_mib, grids_mib)
    script = tmp_path / "node.py"
    script.write_text(RUNNER)
    for name in ("grids", "recipe"):
        subprocess.run([sys.executable, str(script), str(tmp_path / f"{name}.pkl"), str(tmp_path / name)],
                       check=True)
    key = "entry/instrument/detector/data"
    with h5py.File(tmp_path / "grids" / "projections.h5") as a, h5py.File(tmp_path / "recipe" / "projections.h5") as b:
        da, db = a[key][...], b[key][...]
    assert da.shape[1:] == (64, 64) and da.shape[0] >= 4 and np.ptp(da) > 100  # views, flats, darks
    assert np.array_equal(da, db)
    with h5py.File(tmp_path / "grids" / "truth.h5") as a, h5py.File(tmp_path / "recipe" / "truth.h5") as b:
        assert np.array_equal(a["labels"][...], b["labels"][...])
        assert np.array_equal(a["labels"][...], plan.truth[0].labels)


def test_recipe_digests_name_what_differs(tmp_path):
    import dataclasses

    import pytest

    from twin.errors import XrmInputError
    from twin.planfile import load_plan, materialise

    plan = small_zoom_plan()
    save_plan(plan, tmp_path / "recipe.pkl", phantom="recipe")
    loaded = load_plan(tmp_path / "recipe.pkl")
    assert loaded.scene is None and loaded.truth is None
    built, warnings = materialise(loaded)
    assert warnings == []
    assert all(np.array_equal(a.labels, b.labels) for a, b in zip(built.scene.grids, plan.scene.grids))
    # a planned grid with 5 more voxels of label 2 and 5 fewer of label 1 than the rebuilt one
    recipe = loaded.phantom_recipe
    g0 = dict(recipe["digest"]["grids"][0], sha256="0" * 64)
    counts = list(g0["label_counts"])
    counts[1] += 5
    counts[2] -= 5
    g0["label_counts"] = counts
    tampered = dict(recipe, digest=dict(recipe["digest"], grids=[g0] + recipe["digest"]["grids"][1:]))
    _, warnings = materialise(dataclasses.replace(loaded, phantom_recipe=tampered))
    assert len(warnings) == 1 and "grid 0" in warnings[0] and "{1: -5, 2: 5}" in warnings[0]
    omega = dict(recipe, solid_angle={"sha256": "0" * 64, "sum_sr": float(plan.solid_angle_sr.sum()) / (1 + 1e-3)})
    _, warnings = materialise(dataclasses.replace(loaded, phantom_recipe=omega))
    assert len(warnings) == 1 and "solid angles" in warnings[0] and "1.00e-03" in warnings[0]
    wrong_order = dict(recipe, materials=list(reversed(recipe["materials"])))
    with pytest.raises(XrmInputError, match="attenuation table"):
        materialise(dataclasses.replace(loaded, phantom_recipe=wrong_order))
    with pytest.raises(XrmInputError, match="grids or recipe|one of grids, recipe"):
        save_plan(plan, tmp_path / "x.pkl", phantom="meshes")
    parts = resolve(parts_scenario(PARTS, pixels=(8, 8), projections=1))
    with pytest.raises(XrmInputError, match="parts"):
        save_plan(parts, tmp_path / "x.pkl", phantom="recipe")
    assert not (tmp_path / "x.pkl").exists()


BARE_NODE_RUN = textwrap.dedent("""
    import sys, importlib.abc
    class Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path, target=None):
            if name.split(".")[0] in ("spekpy", "xraydb", "trimesh", "matplotlib"):
                raise ImportError(f"{name} is not available on this node")
            return None
    sys.meta_path.insert(0, Block())
    from twin.cli import app
    sys.argv = ["xrm-twin", "run", sys.argv[1], "--out", sys.argv[2], "--arch", "cpu"]
    app()
""")


def test_run_from_a_recipe_plan_on_a_bare_node(tmp_path):
    """`xrm-twin run PLAN.pkl` without SpekPy, xraydb, trimesh or matplotlib: every data file and
    report.json, no figures, and a warning that says so."""
    import json

    from twin.scenario import load_scenario

    spec = load_scenario("nimh-zoom", [
        "geometry.projections=48", "detector.pixels=[64, 64]", "geometry.binning=8",
        "phantom.voi={center_mm = [2.5, 0.0, 10.0], size_mm = [0.9, 0.9, 0.9]}", 'recon.denoise="none"'])
    save_plan(resolve(spec), tmp_path / "recipe.pkl", phantom="recipe")
    script = tmp_path / "node.py"
    script.write_text(BARE_NODE_RUN)
    subprocess.run([sys.executable, str(script), str(tmp_path / "recipe.pkl"), str(tmp_path / "run")],
                   check=True)
    run = tmp_path / "run"
    report = json.loads((run / "report.json").read_text())
    assert any("matplotlib" in w for w in report["warnings"])
    assert not (run / "figures").exists() or not any((run / "figures").iterdir())
    for name in ("projections.h5", "truth.h5", "recon.h5", "segmentation.h5", "report.html"):
        assert (run / name).is_file(), name
    assert report["scenario"] == "nimh-zoom" and report["metrology"]
    with h5py.File(run / "truth.h5") as t, h5py.File(run / "segmentation.h5") as s:
        assert s["labels"].shape[0] > 0 and t["labels"].shape[0] > 0
