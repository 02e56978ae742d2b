"""``xrm-twin compare``: registration, change map and damage growth of two run folders.

The two "runs" are written here by hand (recon.h5, segmentation.h5, report.json) from a known
geometry: the after scan is the before scan with a crack that grew by a known number of voxels
and a new void, the whole sample shifted by a known whole number of voxels (a remount). Every
number the command reports is compared with that construction.
"""

import json

import numpy as np
import pytest
from scipy import ndimage as ndi
from typer.testing import CliRunner

from recon.io import write_recon, write_segmentation
from twin.cli import app
from twin.compare import compare_runs

VS = 5.0            # um
SHIFT = (3, -2, 1)  # (x, y, z) voxels: content moves to higher x, lower y, higher z
N = 64


def _scene(crack_len: int, void: bool):
    lab = np.zeros((N, N, N), np.int32)
    z, y, x = np.mgrid[:N, :N, :N]
    lab[(x - 32) ** 2 + (y - 32) ** 2 <= 22 ** 2] = 1            # host cylinder
    lab[16:48, 30:32, 20:20 + crack_len] = 2                     # a crack 2 voxels open
    if void:
        lab[(x - 40) ** 2 + (y - 42) ** 2 + (z - 30) ** 2 <= 3 ** 2] = 3
    return lab


def _write_truth(folder, lab_shifted):
    from twin.materials import get_material
    from twin.truth_io import write_truth
    from twin.volume import LabelGrid

    mats = tuple(get_material(m) for m in ("air", "graphite", "water", "air"))
    grid = LabelGrid(lab_shifted.astype(np.uint8), VS, (0.0, 0.0, 0.0), mats,
                     names=("air", "positive_paste", "crack", "void"))
    write_truth(folder / "truth.h5", grid, [{"type": "crack", "label": 2, "center_mm": [0, 0, 0]},
                                            {"type": "void", "label": 3, "center_mm": [0, 0, 0]}])


def _write_run(folder, lab, shift, seed, detected, truth_volumes, defect_map=None, truth=False):
    folder.mkdir(parents=True)
    mu = np.array([0.0, 1.0, 0.2, 0.0], np.float32)[lab]
    vol = ndi.gaussian_filter(mu, 0.8) + np.random.default_rng(seed).normal(0, 0.03, lab.shape)
    sx, sy, sz = shift
    vol = np.roll(vol, (sz, sy, sx), axis=(0, 1, 2)).astype(np.float32)
    lab_s = np.roll(lab, (sz, sy, sx), axis=(0, 1, 2))
    if defect_map is not None:
        defect_map = np.roll(defect_map, (sz, sy, sx), axis=(0, 1, 2))
    origin = (0.0, 0.0, 0.0)
    if truth:
        _write_truth(folder, lab_s)
    write_recon(folder / "recon.h5", vol, VS, origin)
    write_segmentation(folder / "segmentation.h5", lab_s, {0: "air", 1: "positive_paste", 2: "crack",
                                                          3: "void"}, VS, origin, defects=defect_map)
    rep = {"scenario": folder.name,
           "defects": {"detected": detected, "truth": [{"type": d["type"]} for d in detected]},
           "metrology_truth": {k: {"volume_mm3": v} for k, v in truth_volumes.items()}}
    (folder / "report.json").write_text(json.dumps(rep))


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("compare")
    dv = (VS / 1000) ** 3
    before_lab, after_lab = _scene(10, False), _scene(16, True)
    mm = lambda ix, iy, iz: [ix * VS / 1000, iy * VS / 1000, iz * VS / 1000]  # noqa: E731
    det_b = [{"type": "crack", "center_mm": mm(25, 30.5, 31.5), "volume_mm3": 600 * dv}]
    # in the after run's own frame (shifted by SHIFT): the crack and a new void at (40, 42, 30)
    det_a = [{"type": "crack", "center_mm": mm(28 + SHIFT[0], 30.5 + SHIFT[1], 31.5 + SHIFT[2]),
              "volume_mm3": 1000 * dv},
             {"type": "void", "center_mm": mm(40 + SHIFT[0], 42 + SHIFT[1], 30 + SHIFT[2]),
              "volume_mm3": 123 * dv, "size_um": 30.0}]
    _write_run(root / "before", before_lab, (0, 0, 0), 1, det_b, {"crack": 640 * dv})
    _write_run(root / "after", after_lab, SHIFT, 2, det_a, {"crack": 1024 * dv, "void": 123 * dv})
    res = compare_runs(root / "before", root / "after", root / "out")
    return root, res, before_lab, after_lab


def test_registration_recovers_the_remount(runs):
    _, res, _, _ = runs
    np.testing.assert_allclose(res["registration"]["translation_vox"], SHIFT, atol=0.25)
    assert max(abs(a) for a in res["registration"]["rotation_deg"]) < 0.3


def test_change_map_counts_the_grown_crack(runs):
    _, res, b, a = runs
    grown = int(np.count_nonzero((a == 2) & (b != 2)))  # 32 x 2 x 6 voxels
    cm = res["change_map"]["components"]["crack"]
    assert cm["appeared_mm3"] == pytest.approx(grown * (VS / 1000) ** 3, rel=0.05)
    assert cm["disappeared_mm3"] < 0.05 * cm["appeared_mm3"]
    assert res["change_map"]["components"]["void"]["appeared_mm3"] > 0


def test_damage_growth_and_new_detections(runs):
    root, res, _, _ = runs
    dv = (VS / 1000) ** 3
    g = res["damage_growth"]["crack"]
    assert g["growth_detected_mm3"] == pytest.approx(400 * dv)
    assert g["growth_truth_mm3"] == pytest.approx(384 * dv)
    assert g["growth_rel_error"] == pytest.approx(400 / 384 - 1)
    assert g["found"] is True
    # the crack is matched to the before scan's (after the registration); the void is new, and
    # its centre lands where it is in the before frame
    assert [d["type"] for d in res["new_detections"]] == ["void"]
    np.testing.assert_allclose(res["new_detections"][0]["center_mm_before_frame"],
                               [40 * VS / 1000, 42 * VS / 1000, 30 * VS / 1000], atol=0.3 * VS / 1000)
    html = (root / "out" / "report.html").read_text()
    assert "Damage growth" in html and "change_map.png" in html
    assert json.loads((root / "out" / "report.json").read_text())["damage_growth"]["crack"]["found"]


def test_cli_compare_and_bad_folder(runs, tmp_path):
    root, _, _, _ = runs
    r = CliRunner().invoke(app, ["--quiet", "compare", str(root / "before"), str(root / "after"),
                                 "--out", str(tmp_path / "c")])
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(app, ["compare", str(root / "before"), str(tmp_path / "nope"),
                                 "--out", str(tmp_path / "d")])
    assert r.exit_code == 2 and "report.json" in r.output


def _detected_map(lab, rows):
    """A defect map as ``measure`` writes it: the voxels of each labelled defect (a detector's
    core, thinner than the blurred defect), value row index + 1."""
    out = np.zeros(lab.shape, np.uint16)
    for i, r in enumerate(rows, start=1):
        core = ndi.binary_erosion(lab == {"crack": 2, "void": 3}[r["type"]])
        out[core if core.any() else lab == {"crack": 2, "void": 3}[r["type"]]] = i
    return out


def test_growth_by_difference_recovers_the_grown_volume(tmp_path):
    """With defect maps and contrasts, the growth is the deficit of the registered difference:
    the crack's 384 grown voxels (contrast 0.8) and the new void's voxels come back within 5 %
    under blur 0.8 voxel and noise 0.03 in each scan; the segmented (detected) volumes that the
    runs report are deliberately off (600 / 1000 voxels) and do not enter it."""
    dv = (VS / 1000) ** 3
    before_lab, after_lab = _scene(10, False), _scene(16, True)
    mm = lambda ix, iy, iz: [ix * VS / 1000, iy * VS / 1000, iz * VS / 1000]  # noqa: E731
    det_b = [{"type": "crack", "center_mm": mm(25, 30.5, 31.5), "volume_mm3": 600 * dv,
              "contrast_mu": 0.8, "n_voxels": 100}]
    det_a = [{"type": "crack", "center_mm": mm(28 + SHIFT[0], 30.5 + SHIFT[1], 31.5 + SHIFT[2]),
              "volume_mm3": 1000 * dv, "contrast_mu": 0.8, "n_voxels": 200},
             {"type": "void", "center_mm": mm(40 + SHIFT[0], 42 + SHIFT[1], 30 + SHIFT[2]),
              "volume_mm3": 123 * dv, "size_um": 30.0, "contrast_mu": 1.0, "n_voxels": 30}]
    n_void = int((after_lab == 3).sum())
    _write_run(tmp_path / "b", before_lab, (0, 0, 0), 1, det_b, {"crack": 640 * dv},
               defect_map=_detected_map(before_lab, det_b), truth=True)
    _write_run(tmp_path / "a", after_lab, SHIFT, 2, det_a, {"crack": 1024 * dv, "void": n_void * dv},
               defect_map=_detected_map(after_lab, det_a), truth=True)
    res = compare_runs(tmp_path / "b", tmp_path / "a", tmp_path / "out")
    g = res["damage_growth"]["crack"]
    assert g["growth_method"] == "difference"
    assert g["growth_detected_mm3"] == pytest.approx(400 * dv)          # the reports' volumes
    assert g["growth_difference_mm3"] == pytest.approx(384 * dv, rel=0.05)
    assert g["growth_mm3"] == g["growth_difference_mm3"]
    assert abs(g["growth_rel_error"]) < 0.05
    assert g["growth_difference"]["noise_mm3"] < 0.05 * 384 * dv
    # the truth counted in the region both scans saw (all of this central scene)
    assert g["growth_truth_overlap_mm3"] == pytest.approx(384 * dv)
    assert g["growth_rel_error"] == pytest.approx(g["growth_difference_mm3"] / (384 * dv) - 1)
    v = res["damage_growth"]["void"]
    assert v["growth_difference_mm3"] == pytest.approx(n_void * dv, rel=0.05)
    assert v["growth_truth_overlap_mm3"] == pytest.approx(n_void * dv)


def test_deficit_volume_bad_input():
    from recon.registration import deficit_volume
    from twin.errors import XrmInputError

    d = np.zeros((8, 8, 8), np.float32)
    with pytest.raises(XrmInputError, match="contrast"):
        deficit_volume(d, d > 0, 1.0, 0.0)
    with pytest.raises(XrmInputError, match="shape"):
        deficit_volume(d, np.zeros((8, 8, 7), bool), 1.0, 1.0)
