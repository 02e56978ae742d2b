"""Must-show 6 (issue 2): the paper's voxel sizes from distances, objective and binning."""

import numpy as np
import pytest

from twin.geometry import ScanGeometry, focal_spot_fwhm_um
from twin.plan import resolve_geometry
from twin.scenario import load_scenario

PAPER_VOXEL_UM = {"coin-lowres": 27.3, "coin-highres": 12.16, "coin-short": 12.16,
                  "pouch-highres": 3.74, "nimh-lowres": 52.53, "nimh-zoom": 3.62,
                  "nimh-zoom-120cycles": 3.62}


@pytest.mark.parametrize("name,voxel_um", sorted(PAPER_VOXEL_UM.items()))
def test_paper_voxel_sizes(name, voxel_um):
    spec = load_scenario(name)
    g = resolve_geometry(spec)
    # independent arithmetic: p_eff = pixel x binning / (objective x (a + b) / a)
    objective = {"0.4x": 0.4, "4x": 4.0}[spec.geometry["objective"]]
    a, b = spec.geometry["source_object_mm"], spec.geometry["object_detector_mm"]
    p_eff = spec.detector["pixel_um"] * spec.geometry["binning"] / (objective * (a + b) / a)
    assert g.voxel_size_um == pytest.approx(p_eff, rel=1e-12)
    assert g.voxel_size_um == pytest.approx(voxel_um, rel=0.01)


def test_vectors_centre_ray_and_magnification():
    g = ScanGeometry(30.0, 45.0, objective="flat-panel", pixel_um=100.0, cols=5, rows=3, n_views=4)
    v = g.vectors()
    # view 0: source at -a on y, detector centre at +b, columns along +x, rows along +z
    assert np.allclose(v[0, 0:3], [0, -30, 0]) and np.allclose(v[0, 3:6], [0, 45, 0])
    assert np.allclose(v[0, 6:9], [0.1, 0, 0]) and np.allclose(v[0, 9:12], [0, 0, 0.1])
    # view 1 (90 deg): the sample turned +90 deg, so in the sample frame the source sits at
    # R(-90) (0, -a, 0) = (-a, 0, 0)
    assert np.allclose(v[1, 0:3], [-30, 0, 0], atol=1e-12)
    assert g.geometric_magnification == pytest.approx(75 / 30)
    assert g.voxel_size_um == pytest.approx(100 / 2.5)


def test_axis_offset_shifts_the_projection_of_the_axis():
    g = ScanGeometry(30.0, 45.0, objective="flat-panel", pixel_um=100.0, cols=5, rows=3, n_views=1,
                     axis_offset_mm=0.2)
    v = g.vectors()[0]
    # the axis (x = 0 in the sample frame) moves by +0.2 mm in the lab: the detector centre is
    # at x = -0.2 relative to the axis, and the source too
    assert v[0] == pytest.approx(-0.2) and v[3] == pytest.approx(-0.2)


def test_focal_spot_grows_with_power_and_blur_with_magnification():
    assert focal_spot_fwhm_um(25) > focal_spot_fwhm_um(6.5) > focal_spot_fwhm_um(0.5)
    g1 = ScanGeometry(30.0, 10.0, objective="4x", binning=2)
    g2 = ScanGeometry(30.0, 60.0, objective="4x", binning=2)
    assert g2.source_blur_fwhm_um(10) == pytest.approx(10 * (g2.geometric_magnification - 1))
    assert g2.source_blur_fwhm_um(10) > g1.source_blur_fwhm_um(10)


def test_sample_center_moves_the_part_onto_the_axis():
    """geometry.sample_center_mm puts that sample point on the rotation axis at the beam centre."""
    from tests.twin_helpers import parts_scenario
    from twin.plan import resolve

    part = {"shape": "sphere", "material": "Al", "radius_mm": 0.3, "center_mm": [1.0, 0.5, -0.4]}
    spec = parts_scenario([part], pixels=(31, 31), pixel_um=40.0, projections=4,
                          sample_center_mm=[1.0, 0.5, -0.4])
    plan = resolve(spec)
    g = plan.geometry
    lengths, _ = plan.scene.path_lengths(g.vectors(), 31, 31, parallel=True, arch="cpu")
    # whatever the angle, the sphere sits at the detector centre: chord 0.6 mm there
    assert np.allclose(lengths[:, 0, 15, 15], 0.6, rtol=2e-3)
    assert plan.sample_center_mm == (1.0, 0.5, -0.4)
