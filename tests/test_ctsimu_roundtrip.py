"""xrm-twin TOML -> CTSimU JSON -> xrm-twin gives the same geometry and projections."""

from __future__ import annotations

import numpy as np
import pytest

from twin.ctsimu.reader import read_scenario
from twin.ctsimu.writer import export_scenario
from twin.nxtomo import read_nxtomo
from twin.plan import resolve_geometry
from twin.scenario import validate
from twin.simulate import simulate_to


def _spec(tmp_path, **geo):
    g = {"source_object_mm": 40.0, "object_detector_mm": 60.0, "objective": "flat-panel",
         "projections": 4, "arc_deg": 360.0, "start_deg": 10.0}
    g.update(geo)
    data = {"name": "rt", "seed": 3,
            "source": {"kvp": 80.0, "power_w": 10.0, "filter": [{"material": "Al", "thickness_mm": 0.5}]},
            "geometry": g,
            "detector": {"pixels": [24, 20], "pixel_um": 100.0, "ideal": True, "flats": 1, "darks": 1},
            "phantom": {"kind": "parts", "parts": [
                {"shape": "box", "center_mm": [0.3, -0.2, 0.1], "size_mm": [1.5, 1.0, 2.0], "material": "Al"},
                {"shape": "sphere", "center_mm": [-1.1, 0.8, -0.3], "radius_mm": 0.4, "material": "Fe"}]}}
    return validate(data, str(tmp_path / "rt.toml"))


@pytest.mark.parametrize("geo", [{}, {"axis_offset_mm": 0.2, "axis_tilt_deg": 1.5,
                                      "detector_offset_px": [1.5, -2.0], "arc_deg": 180.0}])
def test_vectors_round_trip(tmp_path, geo):
    spec = _spec(tmp_path, **geo)
    path = export_scenario(spec, tmp_path / "rt_ctsimu.json")["path"]
    sc = read_scenario(path)
    want = resolve_geometry(spec).vectors()
    assert sc.vectors.shape == want.shape
    np.testing.assert_allclose(sc.vectors, want, atol=1e-9)
    # the rebuilt xrm-twin scenario describes the same scan
    np.testing.assert_allclose(resolve_geometry(sc.spec).vectors(), want, atol=1e-9)


def test_projections_round_trip(tmp_path):
    spec = _spec(tmp_path)
    path = export_scenario(spec, tmp_path / "ct" / "rt_ctsimu.json")["path"]
    sc = read_scenario(path)
    assert len(sc.parts) == 2
    a = simulate_to(spec, tmp_path / "a", arch="cpu", quiet=True)
    b = simulate_to(sc.spec, tmp_path / "b", arch="cpu", quiet=True)
    pa = read_nxtomo(tmp_path / "a" / "projections.h5")["projections"]
    pb = read_nxtomo(tmp_path / "b" / "projections.h5")["projections"]
    assert pa.shape == pb.shape == (4, 20, 24)
    assert pa.min() < 0.9 * pa.max()  # the parts are in the field of view
    np.testing.assert_array_equal(pa, pb)
    assert a["geometry"]["magnification"] == pytest.approx(b["geometry"]["magnification"])


def test_ctsimu_path_matches_twin_path(tmp_path):
    """The CTSimU runner (explicit vectors, own detector model) sees the same transmission."""
    from twin.ctsimu.run import simulate_images

    spec = _spec(tmp_path)
    path = export_scenario(spec, tmp_path / "rt_ctsimu.json")["path"]
    sc = read_scenario(path)
    imgs = simulate_images(sc, supersample=1, arch="cpu")
    simulate_to(spec, tmp_path / "a", arch="cpu", quiet=True)
    d = read_nxtomo(tmp_path / "a" / "projections.h5")
    t_twin = d["projections"] / d["flats"][0]
    t_ct = imgs["projections"].astype(float) / imgs["flats"][0]
    np.testing.assert_allclose(t_ct, t_twin, rtol=2e-3, atol=2e-4)


def _noisy_spec(tmp_path, flats: int):
    data = {"name": "noisy", "seed": 5,
            "source": {"kvp": 80.0, "power_w": 10.0, "filter": [{"material": "Al", "thickness_mm": 0.5}]},
            "geometry": {"source_object_mm": 40.0, "object_detector_mm": 60.0, "objective": "flat-panel",
                         "projections": 2},
            "detector": {"pixels": [16, 16], "pixel_um": 100.0, "flats": flats, "darks": 1,
                         "exposure_s": 0.01},  # ~60 % of the full well
            "phantom": {"kind": "parts", "parts": [
                {"shape": "sphere", "center_mm": [0.0, 0.0, 0.0], "radius_mm": 0.3, "material": "Al"}]}}
    return validate(data, str(tmp_path / "noisy.toml"))


def test_a_noisy_scenario_exports_its_flat_field_snr_and_focal_spot(tmp_path):
    """CTSimU's snr_at_imax is the SNR of one read of the brightest free-beam pixel: the exported
    value must match the scatter of the twin's own sampled flat fields (400 reads per pixel), and
    the focal spot must blur the CTSimU path as much as the twin's."""
    from twin.acquisition import flats_and_darks
    from twin.ctsimu.run import spot_blur_sigma_px
    from twin.plan import resolve

    n = 400
    spec = _noisy_spec(tmp_path, flats=n)
    res = export_scenario(spec, tmp_path / "noisy_ctsimu.json")
    import json

    data = json.loads((tmp_path / "noisy_ctsimu.json").read_text())
    snr = data["detector"]["noise"]["snr_at_imax"]["value"]
    assert any("snr_at_imax" in note for note in res["notes"])
    plan = resolve(spec, with_scene=False)
    from twin.acquisition import flat_field_full_well_fraction

    assert 0.3 < flat_field_full_well_fraction(plan) < 0.9  # the premise: no clipped flat
    flats, darks = flats_and_darks(plan)
    assert flats.shape == (n, 16, 16)
    mean = flats.astype(float).mean(axis=0) - plan.detector.offset_adu
    std = flats.astype(float).std(axis=0, ddof=1)
    # the central 6 x 6 pixels: the brightest (on the beam axis, the flat falls off slowly) and
    # far enough from the border that the screen blur is not truncated there
    centre = (slice(5, 11), slice(5, 11))
    measured = float(np.mean(mean[centre] / std[centre]))
    assert snr == pytest.approx(measured, rel=0.03), (snr, measured)
    assert 5 < snr < 1e4  # a plausible flat field, not a degenerate one
    # the focal spot: the CTSimU runner's blur equals the twin's
    sc = read_scenario(tmp_path / "noisy_ctsimu.json")
    sig_rows, sig_cols = spot_blur_sigma_px(sc)
    assert plan.source_blur_sigma_px > 0
    assert sig_rows == pytest.approx(plan.source_blur_sigma_px, rel=1e-6)
    assert sig_cols == pytest.approx(plan.source_blur_sigma_px, rel=1e-6)


def test_an_ideal_scenario_exports_no_noise_and_a_point_spot(tmp_path):
    import json

    export_scenario(_spec(tmp_path), tmp_path / "rt_ctsimu.json")
    data = json.loads((tmp_path / "rt_ctsimu.json").read_text())
    assert data["detector"]["noise"]["snr_at_imax"]["value"] is None
    assert all(v["value"] == 0.0 for v in data["source"]["spot"]["sigma"].values())
