"""Must-show 2: the Ni foam realises the requested local thickness and surface-to-volume ratio.

Measured on the truth at 1.5 um voxels with ``phantoms.foam.measure_foam`` (Hildebrand-
Rueegsegger diameter from ``recon.thickness``; marching cubes on a lightly smoothed mask).
"""

import pytest

from twin.errors import XrmInputError

from phantoms import foam
from phantoms.grid import GridSpec

REQUESTS = [
    {"thickness_mean_um": 35.88, "thickness_std_um": 7.66, "surface_to_volume_per_mm": 113.58},
    {"thickness_mean_um": 28.0, "thickness_std_um": 5.0, "surface_to_volume_per_mm": 150.0},
    {"thickness_mean_um": 42.0, "thickness_std_um": 10.0, "surface_to_volume_per_mm": 100.0},
]


@pytest.mark.parametrize("req", REQUESTS, ids=["paper", "thin", "thick"])
def test_foam_statistics_match_request(req):
    spec = foam.foam_spec(req)
    # >= 0.6 mm boxes (>= ~250 struts): the seed-to-seed spread of a box's statistics is then
    # about +-1.5 % (mean), +-8 % (sd), +-1.5 % (S/V); docs/phantoms.md
    n = max(400, int(round(400 * req["thickness_mean_um"] / 35.88)))
    mask = foam.rasterize_foam(spec, GridSpec(1.5, (0.0, 0.0, 0.0), (n, n, n)), seed=0)
    m = foam.measure_foam(mask, 1.5)
    assert m["thickness_mean_um"] == pytest.approx(req["thickness_mean_um"], rel=0.02)
    assert m["thickness_std_um"] == pytest.approx(req["thickness_std_um"], rel=0.10)
    assert m["surface_to_volume_per_mm"] == pytest.approx(req["surface_to_volume_per_mm"],
                                                          rel=0.03)


@pytest.mark.parametrize("bad", [
    {"thickness_std_um": 40.0},                       # sd > mean
    {"thickness_std_um": 25.0},                       # sd >= mean / sqrt(3)
    {"surface_to_volume_per_mm": 400.0},              # far above round struts
    {"surface_to_volume_per_mm": 20.0},               # far below
    {"thickness_mean_um": -3.0},
    {"porosity": 0.9},                                # unknown key
])
def test_impossible_foam_requests_are_refused(bad):
    with pytest.raises(XrmInputError):
        foam.foam_spec(bad)


def test_foam_error_names_the_realisable_range():
    with pytest.raises(XrmInputError, match=r"1/mm"):
        foam.foam_spec({"surface_to_volume_per_mm": 400.0})


def test_cell_foam_is_the_measured_generator():
    """Inside the AAA cell the Ni foam is exactly the standalone generator's foam, clipped to the
    positive electrode (so the statistics above hold for the cell's truth)."""
    import numpy as np

    import phantoms

    ph = phantoms.build("nimh_aaa", {"cycles": 120}, seed=4)
    sp = ph.spiral()
    th = 2 * 2 * np.pi + 0.3
    r = sp.radius_at(th, float(np.mean(ph.geometry["t_pos"])))
    g = ph.rasterize(1.5, (r * np.cos(th), r * np.sin(th), 5.0), (0.25, 0.25, 0.25))
    positive = np.isin(g.labels, [ph.label(n) for n in ("positive_paste", "ni_foam", "crack")])
    assert positive.mean() > 0.5
    # the standalone generator works in the construction frame (cell bottom at z = 0)
    grid = GridSpec(1.5, tuple(np.subtract(g.origin_mm, ph.offset_mm)), g.labels.shape)
    alone = foam.rasterize_foam(ph.foam, grid, seed=4)
    cell_foam = g.labels == ph.label("ni_foam")
    assert cell_foam.any()
    assert np.array_equal(cell_foam, alone & positive)
