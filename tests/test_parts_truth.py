"""Ground truth of ``kind = "parts"`` scenes (truth.h5 per the contract) and the /defects table's
``centre_mm`` column.

Volumes are checked against analytic ones. A voxel is counted when its centre lies inside, so
the count can only be wrong in the half-voxel layer around the surface: ``|error| <= S h / 2``
(S the surface, h the voxel). For a placement off the lattice the lattice points of that layer
fall on both sides in equal measure and the error is a small fraction of the bound; the tests
allow ``0.05 S h`` (a tenth of the bound; the measured errors are below ``0.02 S h``). A box
whose edges are whole numbers of voxels holds exactly ``edge / h`` centres along each axis
(half-open rule), so its volume is exact.
"""

from __future__ import annotations

import copy
import json

import h5py
import numpy as np
import pytest

from twin.errors import XrmInputError
from twin.plan import resolve
from twin.scenario import validate
from twin.truth_io import read_truth, write_truth

H_UM = 10.0  # truth voxel of the volume tests (the scan voxel is 50 um)


def scenario(parts, *, voxel_um=H_UM, pixels=(56, 56), pixel_um=50.0, beam="parallel", projections=1,
             detector=None, name="parts-truth", **geometry):
    d = {
        "name": name, "seed": 1,
        "source": {"kvp": 80, "power_w": 10, "filter": "LE2"},
        "geometry": {"source_object_mm": 50.0, "object_detector_mm": 50.0, "objective": "flat-panel",
                     "projections": projections, "beam": beam, "supersample": 1, **geometry},
        "detector": {"pixels": list(pixels), "pixel_um": pixel_um, "ideal": True, "flats": 1, "darks": 1,
                     **(detector or {})},
        "phantom": {"kind": "parts", "parts": copy.deepcopy(list(parts))},
    }
    if voxel_um is not None:
        d["phantom"]["voxel_um"] = voxel_um
    return validate(d)


def truth_of(parts, **kw):
    plan = resolve(scenario(parts, **kw))
    assert plan.truth is not None
    grid, defects, instances = plan.truth
    assert defects == [] and instances is None
    return plan, grid


def volume_mm3(grid, label):
    return np.count_nonzero(grid.labels == label) * (grid.voxel_size_um / 1000.0) ** 3


def assert_volume(grid, label, volume, surface):
    h = grid.voxel_size_um / 1000.0
    err = volume_mm3(grid, label) - volume
    assert abs(err) < 0.05 * surface * h, (err, err / volume)
    return err / volume


C = [0.0137, -0.0211, 0.0093]  # off the lattice


@pytest.mark.parametrize("part,volume,surface", [
    ({"shape": "sphere", "radius_mm": 0.4}, 4 / 3 * np.pi * 0.4 ** 3, 4 * np.pi * 0.4 ** 2),
    ({"shape": "tube", "radius_mm": 0.5, "inner_radius_mm": 0.3, "height_mm": 0.7, "axis": "x"},
     np.pi * (0.5 ** 2 - 0.3 ** 2) * 0.7, 2 * np.pi * 0.8 * 0.7 + 2 * np.pi * (0.5 ** 2 - 0.3 ** 2)),
    ({"shape": "cylinder", "radius_mm": 0.35, "height_mm": 0.6, "axis": "y"},
     np.pi * 0.35 ** 2 * 0.6, 2 * np.pi * 0.35 * 0.6 + 2 * np.pi * 0.35 ** 2),
])
def test_primitive_volume_matches_the_analytic_one(part, volume, surface):
    _, grid = truth_of([{**part, "material": "Al", "center_mm": C}])
    assert grid.voxel_size_um == H_UM and grid.labels.dtype == np.uint8
    assert set(np.unique(grid.labels)) == {0, 1}
    assert_volume(grid, 1, volume, surface)


def test_box_volume_is_exact_and_the_grid_is_aligned_with_the_reconstruction():
    plan, grid = truth_of([{"shape": "box", "material": "Al", "size_mm": [0.9, 0.5, 0.33], "center_mm": C}])
    assert volume_mm3(grid, 1) == pytest.approx(0.9 * 0.5 * 0.33, rel=1e-12)
    # the lattice tiles the reconstruction's voxels: its corner is the volume's corner plus
    # whole truth voxels
    g = plan.geometry
    lo = -np.array([g.cols, g.cols, g.rows]) * g.voxel_size_um / 2000.0
    k = (np.asarray(grid.origin_mm) - H_UM / 2000.0 - lo) / (H_UM / 1000.0)
    assert np.allclose(k, np.rint(k), atol=1e-9)
    # air on every side of the box (the margin), and nothing of the box on the grid's faces
    lab = grid.labels
    for face in (lab[0], lab[-1], lab[:, 0], lab[:, -1], lab[:, :, 0], lab[:, :, -1]):
        assert not face.any()


def test_truth_is_in_the_sample_frame_around_the_sample_centre():
    """geometry.sample_center_mm moves the parts for the projector; the truth stays in the
    sample frame, on the lattice of the reconstruction (which reconstruct moves back)."""
    c = [1.2, -0.7, 0.4]
    plan, grid = truth_of([{"shape": "sphere", "material": "Al", "radius_mm": 0.3, "center_mm": c}],
                          voxel_um=None, sample_center_mm=c)
    g = plan.geometry
    h = g.voxel_size_um / 1000.0
    k = (np.asarray(grid.origin_mm) - (np.asarray(c) - np.array([g.cols - 1, g.cols - 1, g.rows - 1]) * h / 2)) / h
    assert np.allclose(k, np.rint(k), atol=1e-9)
    i = np.rint((np.asarray(c) - grid.origin_mm) / h).astype(int)
    assert grid.labels[i[2], i[1], i[0]] == 1
    assert_volume(grid, 1, 4 / 3 * np.pi * 0.3 ** 3, 4 * np.pi * 0.3 ** 2)


def test_truth_is_cropped_to_the_reconstructed_volume():
    """A part larger than the field of view: the truth covers the reconstruction's box only."""
    plan, grid = truth_of([{"shape": "box", "material": "Al", "size_mm": [20.0, 20.0, 20.0]}],
                          voxel_um=None, pixels=(8, 6))
    g = plan.geometry
    assert grid.voxel_size_um == pytest.approx(g.voxel_size_um)
    assert grid.labels.shape == (6, 8, 8) and np.all(grid.labels == 1)


def test_mesh_part_volume_matches_its_mesh_and_the_sphere(tmp_path):
    trimesh = pytest.importorskip("trimesh")
    sphere = trimesh.creation.icosphere(subdivisions=4, radius=0.4)
    sphere.apply_translation(C)
    sphere.export(tmp_path / "ball.stl")
    box = trimesh.creation.box(extents=[0.6, 0.3, 0.2])
    box.apply_translation([0.0137, 0.7, -0.6])
    box.export(tmp_path / "brick.stl")
    parts = [{"shape": "mesh", "file": str(tmp_path / "ball.stl"), "material": "Al", "name": "ball"},
             {"shape": "mesh", "file": str(tmp_path / "brick.stl"), "material": "Fe", "name": "brick"}]
    _, grid = truth_of(parts)
    assert grid.names == ("air", "ball", "brick")
    # against the mesh's own volume (trimesh), and the tessellated sphere against the sphere
    rel = assert_volume(grid, 1, sphere.volume, sphere.area)
    assert abs(rel) < 5e-3
    assert volume_mm3(grid, 1) / (4 / 3 * np.pi * 0.4 ** 3) == pytest.approx(1.0, abs=0.01)
    assert volume_mm3(grid, 2) == pytest.approx(0.6 * 0.3 * 0.2, rel=1e-9)


def test_mesh_voxels_agree_with_the_winding_number(tmp_path):
    """Scan conversion vs the generalised winding number (twin.meshes) at random voxel centres
    of a non-convex mesh (a tube as a mesh)."""
    trimesh = pytest.importorskip("trimesh")
    from twin.meshes import winding_number

    m = trimesh.creation.annulus(r_min=0.2, r_max=0.45, height=0.5, sections=48)
    m.apply_translation(C)
    m.export(tmp_path / "ring.stl")
    _, grid = truth_of([{"shape": "mesh", "file": str(tmp_path / "ring.stl"), "material": "Al"}])
    rng = np.random.default_rng(0)
    idx = np.stack([rng.integers(0, n, 4000) for n in grid.labels.shape], axis=1)
    pts = np.asarray(grid.origin_mm) + idx[:, ::-1] * grid.voxel_size_um / 1000.0
    w = winding_number(pts, np.asarray(m.triangles, float))
    sure = np.abs(w - 0.5) > 0.01  # not on the surface
    got = grid.labels[idx[:, 0], idx[:, 1], idx[:, 2]] == 1
    assert np.array_equal(got[sure], (w > 0.5)[sure])


def test_nested_parts_and_priorities_take_the_projectors_label():
    parts = [{"shape": "box", "material": "Al", "size_mm": [1.0, 1.0, 1.0], "name": "host"},
             {"shape": "sphere", "material": "Cu", "radius_mm": 0.2, "center_mm": [0.2, 0.1, 0.0],
              "name": "inclusion", "subdivisions": 3},
             {"shape": "cylinder", "material": "PP", "radius_mm": 0.1, "height_mm": 0.3,
              "center_mm": [-0.25, -0.25, 0.0], "priority": 1, "sections": 32},
             {"shape": "cylinder", "material": "Fe", "radius_mm": 0.1, "height_mm": 0.3,
              "center_mm": [-0.25, -0.25, 0.0], "priority": 2, "sections": 32}]
    _, grid = truth_of(parts, voxel_um=20.0)
    assert grid.names == ("air", "host", "inclusion", "part2", "part3")
    assert [m.name for m in grid.materials] == ["air", "Al", "Cu", "PP", "Fe"]

    def at(x, y, z):
        i = np.rint((np.array([x, y, z]) - grid.origin_mm) / (grid.voxel_size_um / 1000.0)).astype(int)
        return int(grid.labels[i[2], i[1], i[0]])

    assert at(0.2, 0.1, 0.0) == 2  # the inner part replaces the outer one
    assert at(0.45, -0.45, 0.45) == 1
    assert at(-0.25, -0.25, 0.0) == 4  # same space: the higher priority is inside
    assert not np.any(grid.labels == 3)
    assert at(0.0, 0.0, 0.6) == 0
    # the host keeps its volume minus what is nested in it (at 20 um, exact box)
    h = grid.voxel_size_um / 1000.0
    n_all = np.count_nonzero(grid.labels > 0) * h ** 3
    assert n_all == pytest.approx(1.0, rel=1e-9)


def test_voxel_parts_keep_their_component_names(tmp_path):
    from twin.volume import grid_from_names

    lab = np.zeros((10, 10, 10), np.uint8)
    lab[2:8, 2:8, 2:8] = 1
    lab[4:6, 4:6, 4:6] = 2
    g = grid_from_names(lab, 50.0, (-0.225, -0.225, -0.225), ["air", "Al", "Cu"])
    g = type(g)(g.labels, g.voxel_size_um, g.origin_mm, g.materials, ("air", "shell", "core"))
    write_truth(tmp_path / "vox.h5", g)
    parts = [{"shape": "labels", "file": str(tmp_path / "vox.h5"), "name": "cube"},
             {"shape": "sphere", "material": "PP", "radius_mm": 0.1, "center_mm": [0.6, 0.0, 0.0]}]
    _, grid = truth_of(parts, voxel_um=50.0)
    assert grid.names == ("air", "cube:shell", "cube:core", "part1")
    assert [m.name for m in grid.materials] == ["air", "Al", "Cu", "PP"]
    assert np.count_nonzero(grid.labels == 1) == 6 ** 3 - 2 ** 3
    assert np.count_nonzero(grid.labels == 2) == 2 ** 3


def test_repeated_names_are_made_unique():
    parts = [{"shape": "sphere", "material": "Al", "radius_mm": 0.1, "center_mm": [x, 0.0, 0.0],
              "name": "ball", "subdivisions": 2} for x in (-0.3, 0.0, 0.3)]
    _, grid = truth_of(parts, voxel_um=25.0)
    assert grid.names == ("air", "ball", "ball_2", "ball_3")


def test_a_truth_that_cannot_fit_is_refused_naming_its_size(monkeypatch):
    monkeypatch.setenv("XRM_TWIN_MAX_BYTES", str(1 << 20))
    with pytest.raises(XrmInputError, match=r"ground truth of the parts scene at 2 um voxels needs a "
                                            r"\d+ x \d+ x \d+ label grid .* GiB"):
        resolve(scenario([{"shape": "box", "material": "Al", "size_mm": [2.0, 2.0, 2.0]}], voxel_um=2.0))


def test_truth_file_is_deterministic_and_plan_files_carry_it(tmp_path):
    from twin.planfile import load_plan, save_plan
    from twin.simulate import simulate_plan, simulate_to

    spec = scenario([{"shape": "tube", "material": "Al", "radius_mm": 0.5, "inner_radius_mm": 0.3,
                      "height_mm": 0.8, "name": "pipe"},
                     {"shape": "sphere", "material": "Cu", "radius_mm": 0.2, "subdivisions": 3}],
                    voxel_um=None, pixels=(24, 20), projections=2)
    for run in ("a", "b"):
        simulate_to(spec, tmp_path / run, arch="cpu", quiet=True)
    a, b = ((tmp_path / r / "truth.h5").read_bytes() for r in ("a", "b"))
    assert a == b
    plan = resolve(spec)
    save_plan(plan, tmp_path / "plan.pkl")
    loaded = load_plan(tmp_path / "plan.pkl")
    assert np.array_equal(loaded.truth[0].labels, plan.truth[0].labels)
    assert loaded.truth[0].names == ("air", "pipe", "part1")
    simulate_plan(loaded, tmp_path / "from_plan", arch="cpu", quiet=True)
    assert (tmp_path / "from_plan" / "truth.h5").read_bytes() == a


def test_run_of_a_parts_scene_measures_the_parts_by_name(tmp_path):
    """End to end: truth.h5 per the contract, report.json names the components after the parts
    and holds metrology_truth."""
    from twin.run import run_scenario

    parts = [{"shape": "cylinder", "material": "Al", "radius_mm": 0.45, "height_mm": 0.7, "name": "rod"},
             {"shape": "sphere", "material": "Cu", "radius_mm": 0.2, "name": "ball", "subdivisions": 3}]
    spec = scenario(parts, voxel_um=None, beam="cone", pixels=(48, 40), pixel_um=60.0, projections=60,
                    source_object_mm=20.0, object_detector_mm=30.0, name="parts-e2e",
                    detector={"ideal": False, "exposure_s": 0.005})
    report = run_scenario(spec, tmp_path / "run", arch="cpu", quiet=True)
    with h5py.File(tmp_path / "run" / "truth.h5") as f:
        assert np.issubdtype(f["labels"].dtype, np.integer)
        assert f.attrs["voxel_size_um"] == pytest.approx(24.0)
        assert len(f.attrs["origin_mm"]) == 3
        names = [n.decode() if isinstance(n, bytes) else n for n in f["materials"]["name"]]
        assert names == ["air", "rod", "ball"]
        assert {"type", "centre_mm", "center_mm", "size_um"} <= set(f["defects"].dtype.names)
        assert f["defects"].shape == (0,)
    on_disk = json.loads((tmp_path / "run" / "report.json").read_text())
    mt = on_disk["metrology_truth"]
    assert set(mt) == {"rod", "ball"}
    assert set(on_disk["metrology"]) <= {"rod", "ball"} and on_disk["metrology"]
    # the truth inside the measured region: the whole ball, the rod cut by the field of view
    assert mt["ball"]["volume_mm3"] == pytest.approx(4 / 3 * np.pi * 0.2 ** 3, rel=0.02)
    assert report["metrology_truth"] == mt


# --------------------------------------------------------------------------- /defects centre_mm

ROWS = [{"type": "void", "label": 3, "center_mm": [0.1, -0.2, 0.3], "size_um": 15.0},
        {"type": "crack", "label": 4, "centre_mm": [1.0, 2.0, 3.0], "size_um": 200.0, "aperture_um": 2.0}]


def _grid():
    from twin.volume import grid_from_names

    return grid_from_names(np.zeros((2, 2, 2), np.uint8), 10.0, (0.0, 0.0, 0.0), ["air"])


def test_defects_table_has_both_spellings_of_the_centre(tmp_path):
    write_truth(tmp_path / "t.h5", _grid(), ROWS)
    with h5py.File(tmp_path / "t.h5") as f:
        tab = f["defects"][...]
    assert {"center_mm", "centre_mm"} <= set(tab.dtype.names)
    assert np.array_equal(tab["center_mm"], tab["centre_mm"])
    assert np.allclose(tab["centre_mm"], [[0.1, -0.2, 0.3], [1.0, 2.0, 3.0]])
    assert json.loads(tab["extra"][1]) == {"aperture_um": 2.0}  # centre_mm is a column, not an extra
    back = read_truth(tmp_path / "t.h5")["defects"]
    assert [r["center_mm"] for r in back] == [[0.1, -0.2, 0.3], [1.0, 2.0, 3.0]]
    assert back[0] == ROWS[0]


def test_a_defects_table_without_the_json_attribute_is_read_from_its_columns(tmp_path):
    """A truth.h5 written to the contract by another tool: the table alone, ``centre_mm``."""
    with h5py.File(tmp_path / "t.h5", "w") as f:
        lab = f.create_dataset("labels", data=np.zeros((2, 2, 2), np.uint8))
        lab.attrs["voxel_size_um"] = 5.0
        lab.attrs["origin_mm"] = [0.0, 0.0, 0.0]
        dt = np.dtype([("type", h5py.string_dtype()), ("centre_mm", "f8", (3,)), ("size_um", "f8")])
        f.create_dataset("defects", data=np.array([("void", (1.0, 2.0, 3.0), 12.0)], dt))
    rows = read_truth(tmp_path / "t.h5")["defects"]
    assert rows == [{"type": "void", "center_mm": [1.0, 2.0, 3.0], "size_um": 12.0}]


def test_the_voi_centre_of_a_parts_scene_goes_on_the_axis():
    """docs/scenarios.md: geometry.sample_center_mm defaults to the VOI centre (as for a battery
    phantom), and an explicit sample_center_mm wins."""
    parts = [{"shape": "sphere", "material": "Al", "radius_mm": 0.3, "center_mm": [1.2, -0.7, 0.4]}]
    s = scenario(parts, voxel_um=None)
    d = {k: copy.deepcopy(getattr(s, k)) for k in ("name", "seed", "source", "geometry", "detector", "phantom")}
    d["phantom"]["voi"] = {"center_mm": [1.2, -0.7, 0.4], "size_mm": [0.8, 0.8, 0.8]}
    assert tuple(resolve(validate(d)).sample_center_mm) == pytest.approx((1.2, -0.7, 0.4))
    d["geometry"]["sample_center_mm"] = [1.0, 0.0, 0.0]
    assert tuple(resolve(validate(d)).sample_center_mm) == pytest.approx((1.0, 0.0, 0.0))
    assert tuple(resolve(s).sample_center_mm) == (0.0, 0.0, 0.0)  # no VOI: the scene's origin
