"""Labels equal the truth exactly; a sample's recorded scenario reproduces it alone; reader."""

from __future__ import annotations

import json
import pickle
import subprocess
import sys

import h5py
import numpy as np
import pytest
from typer.testing import CliRunner

from twin.datasets.reader import DatasetReader
from twin.datasets.runner import run_dataset
from twin.datasets.sample import parts_labels
from twin.nxtomo import read_nxtomo
from twin.scenario import load_scenario

from tests.test_dataset_helpers import tiny_spec


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    out = tmp_path_factory.mktemp("labels")
    run_dataset(tiny_spec(count=3), out, workers=0, quiet=True)
    return out


def _expected_labels(scenario, shape, voxel_um, origin_mm, label_of_material):
    """Independent truth: voxel centres tested against each primitive, inner parts last.

    Half-open, as truth.h5 (twin.parts_truth): ``r < R`` and ``lo <= z < hi``. The drawn
    radii and centres put no voxel centre on a surface, so the closed rule (``<=``, the
    dataset's rule before it used twin.parts_truth) gives the same labels here; see
    test_parts_labels_are_the_truth_h5_rasterisation for faces on voxel centres.
    """
    nz, ny, nx = shape
    z, y, x = np.meshgrid(*(origin_mm[a] + np.arange(n) * voxel_um / 1000.0
                            for a, n in ((2, nz), (1, ny), (0, nx))), indexing="ij")
    out = np.zeros(shape, np.int64)
    parts = scenario["phantom"]["parts"]
    # the scene is can > (cathode, anode) > voids: paint in that order
    for p in parts:
        c = p.get("center_mm", [0.0, 0.0, 0.0])
        if p["shape"] == "cylinder":
            h = p["height_mm"] / 2
            m = (((x - c[0]) ** 2 + (y - c[1]) ** 2 < p["radius_mm"] ** 2)
                 & (z >= c[2] - h) & (z < c[2] + h))
        else:
            assert p["shape"] == "sphere"
            m = (x - c[0]) ** 2 + (y - c[1]) ** 2 + (z - c[2]) ** 2 < p["radius_mm"] ** 2
        out[m] = label_of_material[p["material"].lower()]
    return out


def test_labels_match_the_truth_exactly(dataset):
    n_voids_total = 0
    for shard in sorted((dataset / "shards").glob("*.h5")):
        with h5py.File(shard) as f:
            scenario = json.loads(f.attrs["scenario"])
            labels = f["labels"][...]
            vol = f["volume"][...]
            vox = float(f["labels"].attrs["voxel_size_um"])
            origin = f["labels"].attrs["origin_mm"]
            mats = json.loads(f["materials"].attrs["json"])
            defects = json.loads(f["defects"].attrs["json"])
        lut = {m["material"].lower(): m["label"] for m in mats if m["label"] > 0}
        expected = _expected_labels(scenario, labels.shape, vox, origin, lut)
        assert labels.shape == vol.shape
        np.testing.assert_array_equal(labels, expected)
        voids = [p for p in scenario["phantom"]["parts"] if p["name"].startswith("void")]
        n_voids_total += len(voids)
        assert len(defects) == len(voids)
        for d, v in zip(defects, voids):
            assert d["type"] == "void"
            np.testing.assert_allclose(d["center_mm"], v["center_mm"])
            assert d["size_um"] == pytest.approx(2000 * v["radius_mm"])
        # the reconstruction sees the can (Al) brighter than the air around it
        can = labels == lut["al"]
        assert vol[can].mean() > 5 * abs(vol[labels == 0].mean())
    assert n_voids_total >= 3


def test_parts_labels_are_the_truth_h5_rasterisation(tmp_path):
    """parts_labels rasterises with twin.parts_truth (the code of truth.h5), half-open.

    Scan voxel 25 um (50 um pixels, magnification 2), 24^3 voxels: centres at
    0.025 * (k - 11.5) mm. The box spans [-0.0875, 0.0625) mm = 0.025 * [-3.5, 2.5) on every
    axis, its faces on voxel centres: the half-open rule holds the centres
    0.025 * (-3.5 .. 1.5), 6 per axis, so exactly 6^3 = 216 voxels, its volume. (The closed
    rule, ``|x - c| <= s / 2`` in mm, holds 7 per axis in exact arithmetic and 6 or 7 in
    floating point by rounding: the dataset's labels before it used twin.parts_truth had
    7^3 = 343 here.) The box nests in a mesh ball (relative file name, read next to the
    scenario as the projector reads it); at the scan voxel the truth.h5 lattice is the same
    lattice, so truth.h5 is a crop of the dataset's labels (truth label = part index + 1).
    """
    trimesh = pytest.importorskip("trimesh")
    from twin.plan import resolve
    from twin.scenario import validate

    trimesh.creation.icosphere(subdivisions=3, radius=0.25).export(tmp_path / "ball.stl")
    scan = validate({
        "name": "box-in-ball", "seed": 1, "source": {"kvp": 80, "power_w": 2, "filter": "LE2"},
        "geometry": {"source_object_mm": 40.0, "object_detector_mm": 40.0, "objective": "flat-panel",
                     "projections": 4, "beam": "cone"},
        "detector": {"pixels": [24, 24], "pixel_um": 50.0, "flats": 1, "darks": 1},
        "phantom": {"kind": "parts", "parts": [
            {"name": "ball", "shape": "mesh", "file": "ball.stl", "material": "Al"},
            {"name": "brick", "shape": "box", "material": "Cu", "size_mm": [0.15, 0.15, 0.15],
             "center_mm": [-0.0125, -0.0125, -0.0125]},
            {"name": "shell", "shape": "sphere", "material": "Al", "radius_mm": 0.03,
             "center_mm": [0.15, 0.0, 0.0]},
        ]}}, origin=str(tmp_path / "scene.toml"))
    out = parts_labels(scan)
    labels, inst = out["labels"], out["instances"]
    assert out["voxel_size_um"] == pytest.approx(25.0) and labels.shape == (24, 24, 24)
    assert labels.dtype == np.uint8 and inst.dtype == np.int32
    assert [(m["label"], m["name"], m["material"]) for m in out["materials"]] == [
        (0, "background", "air"), (1, "ball", "Al"), (2, "brick", "Cu")]  # Al twice: one slot
    assert np.count_nonzero(inst == 2) == 6 ** 3
    lo = 11.5 - 3.5  # the index of the centre 0.025 * -3.5 mm
    np.testing.assert_array_equal(np.argwhere(inst == 2).min(0), [lo] * 3)
    np.testing.assert_array_equal(np.argwhere(inst == 2).max(0), [lo + 5] * 3)
    assert np.count_nonzero(inst == 3) > 0 and np.count_nonzero(inst == 1) > 0
    np.testing.assert_array_equal(labels, np.array([0, 1, 2, 1], np.uint8)[inst])
    grid, _, _ = resolve(scan).truth
    assert grid.voxel_size_um == pytest.approx(out["voxel_size_um"])
    shift = (np.asarray(grid.origin_mm) - np.asarray(out["origin_mm"])) / 0.025  # x, y, z voxels
    np.testing.assert_allclose(shift, np.rint(shift), atol=1e-9)
    crop = inst[tuple(slice(o, o + n) for o, n in zip(np.rint(shift).astype(int)[::-1], grid.labels.shape))]
    assert crop.shape == grid.labels.shape and np.count_nonzero(crop) == np.count_nonzero(inst)
    np.testing.assert_array_equal(crop, grid.labels)


def test_recorded_scenario_reproduces_the_sample_alone(dataset, tmp_path):
    from twin.cli import app

    reader = DatasetReader(dataset)
    k = 1
    toml = tmp_path / "sample.toml"
    toml.write_text(reader.scenario_toml(k), encoding="utf-8")
    res = CliRunner().invoke(app, ["--quiet", "simulate", str(toml), "--out", str(tmp_path / "sim"),
                                   "--arch", "cpu"])
    assert res.exit_code == 0, res.output
    sim = read_nxtomo(tmp_path / "sim" / "projections.h5")
    with h5py.File(dataset / reader.rows[k]["shard"]) as f:
        np.testing.assert_array_equal(sim["projections"], f["projections/data"][...])
        np.testing.assert_array_equal(sim["flats"], f["projections/flats"][...])
        np.testing.assert_array_equal(sim["darks"], f["projections/darks"][...])
        labels = f["labels"][...]
    np.testing.assert_array_equal(parts_labels(load_scenario(toml))["labels"], labels)


def test_reader_patches_for_a_dataloader(dataset):
    ds = DatasetReader(dataset, patch_size=8, patches_per_sample=3, seed=1)
    assert len(ds) == 9
    item = ds[4]
    assert item["volume"].shape == (8, 8, 8) and item["volume"].dtype == np.float32
    assert item["labels"].shape == (8, 8, 8) and item["labels"].dtype == np.int64
    full = DatasetReader(dataset, fields=("volume", "labels"))[1]
    cz, cy, cx = item["corner_zyx"]
    np.testing.assert_array_equal(item["labels"], full["labels"][cz:cz + 8, cy:cy + 8, cx:cx + 8])
    np.testing.assert_array_equal(item["volume"], full["volume"][cz:cz + 8, cy:cy + 8, cx:cx + 8])
    again = pickle.loads(pickle.dumps(ds))[4]  # DataLoader workers get a pickled copy
    np.testing.assert_array_equal(again["corner_zyx"], item["corner_zyx"])
    corners = [tuple(ds[i]["corner_zyx"]) for i in range(9)]
    ds.set_epoch(1)
    assert [tuple(ds[i]["corner_zyx"]) for i in range(9)] != corners
    batch = {k: np.stack([ds[i][k] for i in range(4)]) for k in ("volume", "labels")}  # default_collate
    assert batch["volume"].shape == (4, 8, 8, 8)
    fg = DatasetReader(dataset, patch_size=4, patches_per_sample=5, foreground=1.0)
    assert all(fg[i]["labels"].max() > 0 for i in range(len(fg)))
    stored = DatasetReader(dataset, source="patches")
    assert len(stored) == 3 * 2 and stored[0]["volume"].shape == (8, 8, 8)
    vol, lab, meta = next(DatasetReader(dataset, split=reader_split(dataset)).samples())
    assert vol.shape == lab.shape and meta["scenario"]["phantom"]["kind"] == "parts"
    code = "import sys, twin.datasets.reader; assert 'torch' not in sys.modules"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True).returncode == 0


def reader_split(dataset):
    rows = [json.loads(line) for line in (dataset / "manifest.jsonl").read_text().splitlines()]
    return rows[0]["split"]


def test_battery_phantom_labels_are_its_truth(tmp_path):
    """Battery kinds go through the same code: the shard's labels are the phantom's truth.h5."""
    from twin.datasets.sample import run_sample
    from twin.datasets.spec import validate_dataset_spec
    from twin.simulate import simulate_to
    from twin.truth_io import read_truth

    spec = validate_dataset_spec({
        "name": "coin", "count": 1, "base": "coin-lowres",
        "parameters": {"source": {"kvp": {"uniform": [90, 110]}},
                       "geometry": {"projections": 8, "binning": 1},
                       "detector": {"pixels": [24, 24], "pixel_um": 500.0, "flats": 1, "darks": 1}},
        "store": {"projections": True, "recon": True, "labels": True, "defects": True}})
    row = run_sample(spec, 0, tmp_path / "ds")
    with h5py.File(tmp_path / "ds" / row["shard"]) as f:
        labels = f["labels"][...]
        scenario = json.loads(f.attrs["scenario"])
        assert f["volume"].shape == labels.shape
    from twin.scenario import validate

    simulate_to(validate(scenario), tmp_path / "sim", arch="cpu", quiet=True)
    np.testing.assert_array_equal(read_truth(tmp_path / "sim" / "truth.h5")["labels"], labels)
    full, lean = read_truth(tmp_path / "sim" / "truth.h5"), read_truth(tmp_path / "sim" / "truth.h5", instances=False)
    assert full["instances"] is not None and full["instances"].shape == labels.shape
    assert lean["instances"] is None and np.array_equal(lean["labels"], full["labels"])
