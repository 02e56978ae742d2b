"""Must-show 1 (issue 2): slab transmission vs an independent SpekPy x xraydb integral.

The reference integral is written here with SpekPy's spectrum and ``xraydb.material_mu``
(formula + density), not with twin.materials / twin.spectral: only the spectrum generator is
shared. Energy-integrating detector: weight E (ideal) or E (1 - exp(-mu_CsI t)).
"""

import functools

import numpy as np
import pytest
import spekpy
import xraydb

from tests.twin_helpers import slab_scenario
from twin.acquisition import flats_and_darks, iter_projections
from twin.plan import resolve

DENSITY = {"Al": 2.70, "Fe": 7.874, "Cu": 8.96, "CsI": 4.51}
FILTERS = {"Air": [], "LE3": [("Al", 0.6)], "HE2": [("Cu", 0.2)]}


@functools.lru_cache(maxsize=None)
def spekpy_spectrum(kvp):
    s = spekpy.Spek(kvp=kvp, th=-90, targ="W", trans=True, thick=5.0, dk=1.0)
    return s.get_spectrum()


def reference_transmission(kvp, filt, material, thickness_mm, scint=None):
    e_kev, flu = spekpy_spectrum(kvp)
    e_ev = e_kev * 1000.0
    # exit window (0.25 mm diamond) and filter, 1/cm from xraydb
    att = xraydb.material_mu("C", e_ev, density=3.51) * 0.025
    for m, t_mm in FILTERS[filt]:
        att = att + xraydb.material_mu(m, e_ev, density=DENSITY[m]) * t_mm / 10.0
    n = flu * np.exp(-att)
    w = n * e_kev
    if scint is not None:
        w = w * (1.0 - np.exp(-xraydb.material_mu("CsI", e_ev, density=4.51) * scint / 1e4))
    mu = xraydb.material_mu(material, e_ev, density=DENSITY[material]) / 10.0  # 1/mm
    return float(np.sum(w * np.exp(-mu * thickness_mm)) / np.sum(w))


def simulated_transmission(spec):
    plan = resolve(spec)
    proj = np.concatenate([c.images for c in iter_projections(plan, arch="cpu")]).astype(float)
    flats, darks = flats_and_darks(plan)
    t = (proj - darks.mean(0)) / (flats.mean(0) - darks.mean(0))
    return float(t.mean()), float(t.std())


CASES = [(m, t) for m, ts in (("Al", (1.0, 3.0, 10.0)), ("Fe", (0.1, 0.3, 1.0))) for t in ts]


@pytest.mark.parametrize("kvp", [40, 100, 160])
@pytest.mark.parametrize("filt", ["Air", "LE3", "HE2"])
def test_slab_transmission_ideal_detector(kvp, filt):
    checked = 0
    for material, thickness in CASES:
        ref = reference_transmission(kvp, filt, material, thickness)
        if ref <= 1e-3:
            continue
        sim, spread = simulated_transmission(slab_scenario(material, thickness, kvp, filt))
        assert spread < 1e-5 * max(sim, 1e-3) + 1e-9  # uniform slab, no noise
        assert abs(sim / ref - 1.0) <= 0.003, (material, thickness, kvp, filt, sim, ref)
        checked += 1
    assert checked >= 3


@pytest.mark.parametrize("kvp,filt", [(40, "Air"), (100, "LE3"), (160, "HE2")])
def test_slab_transmission_csi_150um(kvp, filt):
    scint = {"material": "CsI", "thickness_um": 150.0}
    checked = 0
    for material, thickness in CASES:
        ref = reference_transmission(kvp, filt, material, thickness, scint=150.0)
        if ref <= 1e-3:
            continue
        spec = slab_scenario(material, thickness, kvp, filt, ideal=False, noise=False,
                             scintillator=scint, blur_fwhm_um=0.0, gain_nonuniformity=0.0,
                             dark_e_per_s=0.0, full_well_e=1e15,
                             gain_e_per_adu=1.0)
        sim, _ = simulated_transmission(spec)
        assert abs(sim / ref - 1.0) <= 0.005, (material, thickness, kvp, filt, sim, ref)
        checked += 1
    assert checked >= 3


def test_monochromatic_slab_is_beer_lambert():
    mu = xraydb.material_mu("Al", 30000.0, density=2.70) / 10.0
    sim, _ = simulated_transmission(slab_scenario("Al", 2.0, 100, "Air", monochromatic_kev=30.0))
    assert sim == pytest.approx(np.exp(-mu * 2.0), rel=1e-4)
