"""Must-show 5 (issue 2): flat-field mean and variance follow the noise model.

Model written here from the physics (not from twin.detector): with absorbed quanta q,
deposited energy s and its second moment s2 per pixel, conversion gain k (e-/keV), screen
Swank factor I, dark current D (e-/s), read noise r (e-), gain g (e-/ADU) and offset o:
    mean = o + (k s + D t) / g
    var  = (k^2 s2 / I + k s + D t + r^2) / g^2 + 1/12      (ADU^2, 1/12 from rounding)
The spectral sums s, s2 come from the plan (their integral is validated in
test_twin_transmission); the test checks the random generation against the formula.
"""

import numpy as np
import pytest

from tests.twin_helpers import slab_scenario
from twin.acquisition import flat_sums, flats_and_darks
from twin.plan import resolve

PIXELS = (400, 300)  # 1.2e5 pixels


def plan_for(exposure_s, k_e_per_kev, read_noise_e=6.0, flats=1):
    spec = slab_scenario("Al", 1.0, 80, "LE3", ideal=False, pixels=PIXELS,
                         scintillator={"material": "CsI", "thickness_um": 150.0},
                         exposure_s=exposure_s, electrons_per_kev=k_e_per_kev, blur_fwhm_um=0.0,
                         gain_nonuniformity=0.0, read_noise_e=read_noise_e, dark_e_per_s=50.0,
                         gain_e_per_adu=2.0, full_well_e=1e9, swank_screen=0.85)
    spec = type(spec)(**{**spec.__dict__, "detector": {**spec.detector, "flats": flats, "darks": 4}})
    return resolve(spec)


# ~1e4 quanta and ~12 e- per quantum; ~1e3 quanta with ~2 e- per quantum (quantum sink);
# ~100 quanta per pixel
@pytest.mark.parametrize("exposure_s,k", [(5e-2, 0.3), (5e-3, 0.05), (5e-4, 0.3)])
def test_flat_field_mean_and_variance(exposure_s, k):
    plan = plan_for(exposure_s, k)
    det = plan.detector
    s_mean = flat_sums(plan)
    q, s, s2 = (float(s_mean[i].mean()) for i in range(3))
    assert np.ptp(s_mean[1]) / s < 1e-6  # parallel beam: uniform flat
    t = plan.exposure_s
    mean_model = det.offset_adu + (k * s + 50.0 * t) / det.gain_e_per_adu
    var_model = (k * k * s2 / 0.85 + k * s + 50.0 * t + 6.0 ** 2) / det.gain_e_per_adu ** 2 + 1 / 12
    flats, darks = flats_and_darks(plan)
    img = flats[0].astype(float)
    assert img.size >= 1e5
    assert img.mean() == pytest.approx(mean_model, rel=0.02)
    assert img.var() == pytest.approx(var_model, rel=0.02)
    assert q > 50 and s / q > 10  # counted quanta; mean absorbed energy above 10 keV
    # darks: offset + dark current, variance of dark + read noise
    d = darks.astype(float)
    assert d.mean() == pytest.approx(det.offset_adu + 50.0 * t / det.gain_e_per_adu, abs=0.05)
    assert d.var() == pytest.approx((50.0 * t + 36.0) / det.gain_e_per_adu ** 2 + 1 / 12, rel=0.03)


def test_finite_count_flats_average_noise():
    """The mean of n flats has 1/n of one flat's variance (fixed-pattern noise of references)."""
    plan = plan_for(5e-3, 0.3, flats=8)
    flats, _ = flats_and_darks(plan)
    one = flats[0].astype(float).var()
    avg = flats.astype(float).mean(axis=0).var()
    assert avg == pytest.approx(one / 8, rel=0.03)
    # frames are independent draws (different seeds per frame)
    assert not np.array_equal(flats[0], flats[1])
