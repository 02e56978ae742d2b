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
