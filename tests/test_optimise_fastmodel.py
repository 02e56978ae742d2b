"""Fast detectability model: task parsing, ranges, noise calibration, CNR scaling, vs full simulation."""

from __future__ import annotations

import math

import numpy as np
import pytest

from twin.errors import XrmInputError
from twin.optimise.fastmodel import (FDK_ALIAS_FACTOR, evaluate, gaussian_filter_transfer,
                                     parse_task, pod_from_dprime)
from twin.scenario import load_scenario


@pytest.fixture(scope="module")
def pouch():
    return load_scenario("pouch-highres")


# ----------------------------------------------------------------------------- tasks


def test_parse_task_defaults_and_options():
    t = parse_task("void:15um@cathode")
    assert (t.kind, t.size_um, t.host, t.fill) == ("void", 15.0, "lfp_cathode", "LiPF6_EC_DMC")
    assert t.path == (("lfp_cathode", 3.9),)
    d = parse_task("delamination:5um@nimh_positive")
    assert d.fill == "KOH_30wt" and d.extent_um == 200.0 and d.normal == "x"
    c = parse_task("crack:3um@lfp_cathode(air);extent=80um;normal=z;path=lfp_cathode:1mm+Al:100um")
    assert c.fill == "air" and c.extent_um == 80.0 and c.normal == "z"
    assert c.path == (("lfp_cathode", 1.0), ("Al", 0.1))
    assert parse_task("void:0.02mm@cathode").size_um == pytest.approx(20.0)


@pytest.mark.parametrize("text, words", [
    ("void15um@cathode", "of the form"),
    ("hole:15um@cathode", "unknown task kind"),
    ("void:-3um@cathode", "cannot read a length"),
    ("void:15um@unobtainium", "unknown host material"),
    ("void:15um@cathode;colour=red", "unknown task option"),
    ("void:15um@cathode;path=Al", "MATERIAL:LENGTH"),
    ("crack:300um@cathode", "must exceed the opening"),
    ("void:15um@PP", "no default path"),
])
def test_parse_task_errors(text, words):
    with pytest.raises(XrmInputError, match=words):
        parse_task(text)


# ----------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("row, words", [
    ({"source.kvp": 200}, "30-160 kV"),
    ({"source.kvp": 20}, "30-160 kV"),
    ({"source.power_w": 30}, "0-25 W"),
    ({"geometry.objective": "10x"}, "0.4x, 4x, 20x, 40x"),
    ({"geometry.binning": 3}, "1, 2, 4"),
    ({"source.filter": "LE9"}, "unknown filter"),
    ({"source.kvpp": 60}, "did you mean 'source.kvp'"),
])
def test_values_outside_the_instrument_are_refused(pouch, row, words):
    with pytest.raises(XrmInputError, match=words):
        evaluate(pouch, [row], "void:15um@cathode")


def test_a_preview_scenario_outside_the_instrument_is_scored_but_not_proposed():
    """quickstart bins 8x (a preview the camera does not offer): its own settings are scored
    and other keys can be varied, but a row proposing 8x binning is refused."""
    quick = load_scenario("quickstart")
    assert quick.geometry["binning"] == 8  # the premise
    e = evaluate(quick, [{}, {"source.kvp": 100.0}], "delamination:5um@nimh_positive")
    assert np.all(np.isfinite(e["d_prime"])) and np.all(e["d_prime"] > 0)
    with pytest.raises(XrmInputError, match="geometry.binning = 8 is outside"):
        evaluate(load_scenario("pouch-highres"), [{"geometry.binning": 8}], "void:15um@cathode")


# ----------------------------------------------------------------------------- model pieces


def test_discrete_gaussian_transfer_matches_scipy():
    from scipy.ndimage import gaussian_filter

    nu = np.fft.fftfreq(128)
    for s in (0.11, 0.4, 1.3, 3.0):
        x = np.zeros(128)
        x[0] = 1.0
        h = np.real(np.fft.fft(gaussian_filter(x, s, mode="wrap", truncate=4.0)))
        np.testing.assert_allclose(gaussian_filter_transfer(nu, s), h, atol=1e-12)
    # a fifth of a pixel does (almost) nothing on the sampled grid
    assert gaussian_filter_transfer(np.array([0.5]), 0.11)[0] > 0.9999


def test_fdk_noise_calibration():
    """White projection noise through the twin's FDK: variance = FDK_ALIAS_FACTOR x in-band model."""
    from recon.fdk import fdk
    from twin.geometry import ScanGeometry
    from twin.runtime import init_taichi

    init_taichi("cpu")
    nv, n = 90, 96
    g = ScanGeometry(source_object_mm=20.0, object_detector_mm=16.1, objective="4x", binning=2,
                     cols=n, rows=n, n_views=nv)
    p = np.random.default_rng(0).standard_normal((nv, n, n)).astype(np.float32)
    v = fdk(p, g)
    d = g.voxel_size_um / 1000.0
    var = float(v[20:76, 30:66, 30:66].var())
    F, k = 0.5 / d, 300
    fr = (np.arange(k) + 0.5) * F / k
    A, B = np.meshgrid(fr, fr, indexing="ij")
    K = 2 * (2 * np.pi * A * A * np.sinc(A * d) ** 4 * np.sinc(B * d) ** 4).sum() * (F / k) ** 2
    model = math.pi / nv * d * d * K
    assert var / model == pytest.approx(FDK_ALIAS_FACTOR, rel=0.04)


def test_pod_threshold_is_rose():
    # POD 0.9 at d' = 5 (p_fa = 1e-4): the Rose criterion
    assert pod_from_dprime(5.0) == pytest.approx(0.9, abs=0.002)
    assert pod_from_dprime(0.0) < 1e-3


def test_cnr_grows_as_sqrt_exposure_times_views(pouch):
    rows = [{"detector.exposure_s": t, "geometry.projections": n}
            for t, n in ((1.0, 400), (4.0, 400), (1.0, 1600), (4.0, 1600), (16.0, 3200))]
    r = evaluate(pouch, rows, "void:15um@cathode")
    dose = np.array([t * n for t, n in ((1.0, 400), (4.0, 400), (1.0, 1600), (4.0, 1600), (16.0, 3200))])
    for key in ("cnr", "d_prime"):
        ratio = r[key] / r[key][0]
        np.testing.assert_allclose(ratio, np.sqrt(dose / dose[0]), rtol=0.05)
    # exposure and views trade one for one (read noise is negligible here)
    assert r["cnr"][1] == pytest.approx(r["cnr"][2], rel=0.02)


def test_vectorised_speed_and_monotonic_physics(pouch):
    import time

    rows = [{"source.kvp": kv, "source.filter": f, "detector.exposure_s": t}
            for kv in range(40, 161, 10) for f in ("Air", "LE2", "LE6", "HE2") for t in (1.0, 4.0)]
    evaluate(pouch, rows[:2], "void:15um@cathode")  # warm caches
    t0 = time.perf_counter()
    r = evaluate(pouch, rows, "void:15um@cathode")
    assert time.perf_counter() - t0 < 20
    assert np.all(np.isfinite(r["d_prime"])) and np.all(r["d_prime"] > 0)
    # LFP vs electrolyte contrast falls with energy
    lo = r["delta_mu_per_mm"][0]
    hi = r["delta_mu_per_mm"][-1]
    assert abs(lo) > abs(hi)


# ----------------------------------------------------------------------------- vs simulation


@pytest.mark.slow
def test_fast_model_matches_full_simulation_3_settings():
    """d' within 20 % of FDK reconstructions of the twin's scans, and the same ranking.

    (The 8-setting comparison is ``python -m twin.optimise.validate``; docs/optimisation.md.)
    """
    from twin.optimise.validate import QUICK, compare

    res = compare(QUICK, pixels=96)
    meas = np.array([r["d_prime"] for r in res["rows"]])
    pred = np.array([r["d_prime_model"] for r in res["rows"]])
    assert np.all(np.abs(pred / meas - 1) < 0.20), (meas, pred)
    assert np.array_equal(np.argsort(meas), np.argsort(pred))


@pytest.mark.slow
def test_full_simulation_cnr_grows_as_sqrt_exposure_times_views():
    from twin.optimise.fullsim import full_simulation

    base = load_scenario("pouch-highres")
    a = full_simulation(base, {"geometry.projections": 90, "detector.exposure_s": 1.0},
                        "void:15um@cathode", pixels=80, max_views=None)
    b = full_simulation(base, {"geometry.projections": 180, "detector.exposure_s": 2.0},
                        "void:15um@cathode", pixels=80, max_views=None)
    # noise sigma (what CNR divides by) falls as 1/sqrt(exposure x views): factor 2 here
    assert a["sigma_measured_per_mm"] / b["sigma_measured_per_mm"] == pytest.approx(2.0, rel=0.05)
    assert b["cnr"] / a["cnr"] == pytest.approx(2.0, rel=0.05)
