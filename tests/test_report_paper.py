"""report.json ``paper``: the paper's numbers beside the measured and truth ones.

The measured quantities are checked on label volumes of known geometry (analytic layer
thickness, disc diameter, stack height, particle diameters), so each assertion tests the
measurement, not the code against itself.
"""

import math

import numpy as np
import pytest

from twin.errors import XrmInputError
from twin.paper import check_paper_table, compare_with_paper, stack_thickness_um
from twin.scenario import builtin_names, load_scenario


def _stack(n=60, vs=2.0):
    """z layers: foil_a (z 10-12), electrode (13-37: 25 voxels), foil_b (38-40), and a disc
    of radius 20 voxels in the electrode plane; balls of diameter 9 voxels in the top region."""
    lab = np.zeros((n, n, n), np.int32)
    lab[10:13] = 1
    lab[13:38] = 2
    lab[38:41] = 3
    z, y, x = np.mgrid[:n, :n, :n].astype(float)
    disc = ((x - 29.5) ** 2 + (y - 29.5) ** 2 <= 20 ** 2) & (z >= 44) & (z < 48)
    lab[disc] = 4
    for c in ((52, 10, 10), (52, 10, 40), (52, 45, 20)):
        ball = (x - c[2]) ** 2 + (y - c[1]) ** 2 + (z - c[0]) ** 2 <= 4.5 ** 2
        lab[ball] = 5
    names = {1: "foil_a", 2: "electrode", 3: "foil_b", 4: "disc", 5: "particle"}
    return lab, names, vs


def test_measured_quantities_match_the_geometry():
    lab, names, vs = _stack()
    paper = {"reference": "test", "voxel_size_um": 2.0,
             "metrology": {"electrode": {"layer_thickness_um": 50.0},
                           "disc": {"projected_diameter_mm": 0.08, "height_mm": 0.008}},
             "stack": {"from": "foil_a", "to": "foil_b", "thickness_um": 62.0},
             "particles": {"particle": {"mean_diameter_um": 18.0}}}
    rep = compare_with_paper(paper, voxel_full_um=2.02, voxel_run_um=vs, metrology={},
                             metrology_truth=None, labels=lab, names=names, truth_labels=lab,
                             truth_names=names, defects=None)
    assert rep["voxel_size_um"]["full_scale_vs_paper"] == pytest.approx(0.01)
    assert rep["metrology"]["electrode"]["layer_thickness_um"]["measured"] == pytest.approx(25 * vs)
    # disc of radius 20 voxels: equivalent-circle diameter of its projection within 1 %
    d = rep["metrology"]["disc"]["projected_diameter_mm"]["measured"]
    assert d == pytest.approx(2 * 20 * vs / 1000, rel=0.01)
    assert rep["metrology"]["disc"]["height_mm"]["measured"] == pytest.approx(4 * vs / 1000)
    # stack from the bottom of foil_a (z 10) to the top of foil_b (z 40): 31 voxels
    assert rep["stack"]["thickness_um"]["measured"] == pytest.approx(31 * vs)
    assert rep["stack"]["thickness_um"]["measured_vs_paper"] == pytest.approx(31 * vs / 62.0 - 1)
    # balls of diameter 9 voxels: equivalent diameter within 5 % (voxelised)
    p = rep["particles"]["particle"]["mean_diameter_um"]["measured"]
    assert p == pytest.approx(9 * vs, rel=0.05)
    # truth measured the same way on the same labels
    assert rep["stack"]["thickness_um"]["truth"] == rep["stack"]["thickness_um"]["measured"]


def test_missing_component_and_defect_rows():
    lab, names, vs = _stack()
    met = {"electrode": {"thickness_um": {"mean": 49.0, "std": 3.0}, "surface_to_volume_per_mm": 40.0}}
    paper = {"metrology": {"electrode": {"thickness_mean_um": 50.0, "surface_to_volume_per_mm": 44.0},
                           "foam": {"thickness_mean_um": 35.88}},
             "defects": {"void": {"mean_diameter_um": 15.0, "found": True},
                         "crack": {"found": True}}}
    defects = {"detected": [{"type": "void", "size_um": 14.0}, {"type": "void", "size_um": 16.0}],
               "truth": [{"type": "void", "size_um": 15.5}, {"type": "crack", "size_um": 300.0}]}
    rep = compare_with_paper(paper, voxel_full_um=2.0, voxel_run_um=vs, metrology=met,
                             metrology_truth=None, labels=lab, names=names, truth_labels=None,
                             truth_names=None, defects=defects)
    e = rep["metrology"]["electrode"]["thickness_mean_um"]
    assert e["measured"] == 49.0 and e["measured_vs_paper"] == pytest.approx(-0.02)
    assert rep["metrology"]["foam"]["thickness_mean_um"]["measured"] is None
    assert "not segmented" in rep["metrology"]["foam"]["thickness_mean_um"]["note"]
    assert rep["defects"]["void"]["mean_diameter_um"]["measured"] == 15.0
    assert rep["defects"]["void"]["found"] == {"paper": True, "measured": True, "truth": True}
    assert rep["defects"]["crack"]["found"]["measured"] is False


@pytest.mark.parametrize("bad,words", [
    ({"metrology": {"foam": {"thickness_um": 3.0}}}, ["thickness_um", "thickness_mean_um"]),
    ({"voxel": 3.6}, ["voxel", "voxel_size_um"]),
    ({"stack": {"from": "a", "thickness_um": 3.0}}, ["stack", "to"]),
    ({"defects": {"void": {"diameter_um": 15}}}, ["diameter_um", "mean_diameter_um"]),
])
def test_bad_paper_tables_name_the_key(bad, words):
    with pytest.raises(XrmInputError) as e:
        check_paper_table(bad)
    for w in words:
        assert w in str(e.value)


def test_stack_without_both_layers_is_none():
    lab = np.zeros((10, 4, 4), np.int32)
    lab[2:4] = 1
    assert stack_thickness_um(lab, {1: "a", 2: "b"}, "a", "b", 1.0) is None
    assert stack_thickness_um(lab, {1: "a"}, "a", "zz", 1.0) is None


def test_every_paper_scenario_carries_the_paper_voxel():
    """The paper's five voxel sizes (Methods) are in the built-ins' [paper] tables, and each
    scenario's geometry reproduces its own within 1 %."""
    from twin.plan import resolve_geometry

    paper = {"coin-lowres": 27.3, "coin-highres": 12.16, "coin-short": 12.16, "pouch-highres": 3.74,
             "nimh-lowres": 52.53, "nimh-zoom": 3.62, "nimh-zoom-120cycles": 3.62}
    assert set(paper) <= set(builtin_names())
    for name, v in paper.items():
        spec = load_scenario(name)
        assert spec.paper["voxel_size_um"] == v
        assert abs(resolve_geometry(spec).voxel_size_um / v - 1) < 0.01
    foam = load_scenario("nimh-zoom").paper["metrology"]["ni_foam"]
    assert foam == {"thickness_mean_um": 35.88, "thickness_std_um": 7.66,
                    "surface_to_volume_per_mm": 113.58}
    assert math.isclose(load_scenario("pouch-highres").paper["stack"]["thickness_um"], 390.0)
