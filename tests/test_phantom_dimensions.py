"""Must-show 1: cell dimensions read from label grids (within 2 %) and every material present."""

import numpy as np
import pytest

import phantoms


def _extent_mm(mask: np.ndarray, axis: int, voxel_um: float) -> float:
    """Extent along array axis (0 = z, 1 = y, 2 = x) of the True voxels, mm."""
    other = tuple(a for a in range(3) if a != axis)
    idx = np.nonzero(mask.any(axis=other))[0]
    return (idx[-1] - idx[0] + 1) * voxel_um / 1000.0


def test_coin_diameter_and_height():
    ph = phantoms.build("coin_na_ion")
    assert ph.bounds_mm == ((-10.0, -10.0, -1.6), (10.0, 10.0, 1.6))
    g = ph.rasterize(50.0)
    solid = g.labels > 0
    assert _extent_mm(solid, 2, 50) == pytest.approx(20.0, rel=0.02)
    assert _extent_mm(solid, 1, 50) == pytest.approx(20.0, rel=0.02)
    thin = ph.rasterize(10.0, (0.0, 0.0, 0.0), (0.3, 0.3, 3.6))
    assert _extent_mm(thin.labels > 0, 0, 10) == pytest.approx(3.2, rel=0.02)


def test_aaa_diameter_and_length():
    ph = phantoms.build("nimh_aaa")
    assert ph.bounds_mm == ((-5.25, -5.25, -22.25), (5.25, 5.25, 22.25))
    g = ph.rasterize(54.0)
    solid = g.labels > 0
    assert _extent_mm(solid, 2, 54) == pytest.approx(10.5, rel=0.02)
    assert _extent_mm(solid, 0, 54) == pytest.approx(44.5, rel=0.02)


def test_pouch_stack_thickness():
    ph = phantoms.build("pouch_lfp")
    g = ph.rasterize(2.0, (0.0, 0.0, 0.0), (0.06, 0.06, 0.62))
    stack = np.isin(g.labels, [ph.label(n) for n in ("al_foil", "cathode", "separator", "void",
                                                      "crack", "anode", "cu_foil")])
    assert _extent_mm(stack, 0, 2.0) * 1000 == pytest.approx(390.0, rel=0.02)
    assert ph.stack_thickness_um == pytest.approx(390.0)


def _fine_voi(kind, ph):
    """VOIs (centre, size, voxel) where the resolved phases and defects live."""
    if kind == "coin_na_ion":
        sx, sy = ph.short_xy
        zc = 0.62 + ph.offset_mm[2]  # cathode/separators, above the can bottom
        return [((0.0, 0.0, zc), (0.12, 0.12, 0.8), 1.5), ((sx, sy, zc), (0.8, 0.8, 0.5), 10.0)]
    if kind == "pouch_lfp":
        return [((0.0, 0.0, 0.0), (0.25, 0.25, 0.5), 3.0)]
    d = ph.damage()
    out = []
    for typ in ("crack", "delamination"):
        th, z = d[typ]["theta"][3], d[typ]["z_mm"][3]
        t = np.mean(ph.geometry["t_pos"]) if typ == "crack" else np.mean(ph.geometry["t_foil"])
        r = ph.spiral().radius_at(th, t)
        out.append(((r * np.cos(th), r * np.sin(th), z), (0.5, 0.5, 0.5), 5.0))
    return out


@pytest.mark.parametrize("kind", phantoms.KINDS)
def test_every_material_present_with_its_label(kind):
    params = {"cycles": 120} if kind == "nimh_aaa" else {}
    ph = phantoms.build(kind, params, seed=0)
    coarse = ph.rasterize({"coin_na_ion": 50.0, "pouch_lfp": 20.0, "nimh_aaa": 100.0}[kind])
    seen = set(np.unique(coarse.labels).tolist())
    for c, s, v in _fine_voi(kind, ph):
        g = ph.rasterize(v, c, s)
        seen |= set(np.unique(g.labels).tolist())
        assert g.materials == ph.materials and g.names == ph.component_names
    assert seen == set(range(len(ph.component_names))), \
        f"missing: {[ph.component_names[i] for i in set(range(len(ph.materials))) - seen]}"
    # material identity of a few labels
    mats = dict(zip(ph.component_names, (m.name for m in ph.materials)))
    assert mats["air"] == "air"
    expect = {"coin_na_ion": {"sodium": "Na", "glass_fibre": "borosilicate",
                              "cathode_particle": "NaLi0.2Ni0.25Mn0.75O2", "gasket": "PP"},
              "pouch_lfp": {"cu_foil": "Cu", "al_foil": "Al", "graphite_particle": "graphite",
                            "cathode": "lfp_cathode", "laminate_pa": "PA6"},
              "nimh_aaa": {"ni_foam": "Ni", "can": "low_carbon_steel", "negative_active":
                           "nimh_negative", "positive_paste": "nimh_positive",
                           "crack": "KOH_30wt"}}[kind]
    for comp, mat in expect.items():
        assert mats[comp] == mat
