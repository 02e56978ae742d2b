"""Must-show 3: pouch voids and graphite particles have the requested mean equivalent diameter
(within 5 %), measured from the voxels of each object in the truth grid."""

import numpy as np
import pytest

import phantoms


def _eq_diameter_um(voxels, voxel_um):
    return (6.0 * np.asarray(voxels, float) / np.pi) ** (1 / 3) * voxel_um


def _inside(center_mm, d_um, lo, hi, margin_mm):
    r = np.asarray(d_um) / 2000.0 + margin_mm
    c = np.asarray(center_mm)
    return np.all((c - r[:, None] >= lo) & (c + r[:, None] <= hi), axis=1)


def test_void_mean_equivalent_diameter():
    ph = phantoms.build("pouch_lfp", {"void_diameter_um": 15.0}, seed=0)
    z0, z1 = ph.layers_mm["cathode"]
    r = ph.render(1.5, (0.0, 0.0, (z0 + z1) / 2), (0.6, 0.6, z1 - z0))
    lo, hi = r.grid.box_mm
    voids = [d for d in r.defects if d["type"] == "void"]
    assert len(voids) > 150
    c = np.array([d["center_mm"] for d in voids])
    dia = np.array([d["diameter_um"] for d in voids])
    ok = _inside(c, dia, lo, hi, 0.002)
    vox = np.array([d["voxels"] for d in voids])[ok]
    # the table's voxel counts are the label grid's
    lab = r.grid.labels
    assert np.count_nonzero(lab == ph.label("void")) == sum(d["voxels"] for d in voids)
    d_eq = _eq_diameter_um(vox, 1.5)
    assert d_eq.mean() == pytest.approx(15.0, rel=0.05)
    # cracks start at voids and carry their own label
    cracks = [d for d in r.defects if d["type"] == "crack"]
    assert cracks and all(d["label"] == ph.label("crack") for d in cracks)


def test_graphite_particle_mean_equivalent_diameter():
    ph = phantoms.build("pouch_lfp", {"particle_diameter_um": 25.0}, seed=0)
    z0, z1 = ph.layers_mm["anode"]
    r = ph.render(1.5, (0.0, 0.0, (z0 + z1) / 2), (0.6, 0.6, z1 - z0))
    lo, hi = r.grid.box_mm
    ob = r.objects
    sel = (ob["label"] == ph.label("graphite_particle")) & ob["complete"] & _inside(
        ob["center_mm"], ob["d_um"], lo, hi, 0.002)
    assert sel.sum() > 100
    d_eq = _eq_diameter_um(ob["voxels"][sel], 1.5)
    assert d_eq.mean() == pytest.approx(25.0, rel=0.05)


def test_pouch_resolved_and_composite_agree():
    """Coarse (composite) and fine (resolved) grids of the same region agree after mapping
    resolved phases to their composite label."""
    ph = phantoms.build("pouch_lfp")
    fine = ph.rasterize(2.0, (0.0, 0.0, 0.0), (0.2, 0.2, 0.6))
    coarse = ph.rasterize(2.0, (0.0, 0.0, 0.0), (0.2, 0.2, 0.6), resolve=False)
    same = ph.composite_label(fine.labels) == coarse.labels
    assert same.all()
