"""Issue 5 must-show 5 on simulated scans: CNR grows as sqrt(exposure x views).

Small cone-beam scans of an Al cylinder through the public pipeline (twin.simulate ->
twin.reconstruct); quantum noise only (no read noise, dark current or gain non-uniformity, many
flats) so that theory predicts CNR proportional to sqrt(exposure x views) exactly.
"""

import math

import numpy as np
import pytest
from scipy import ndimage as ndi

pytestmark = pytest.mark.slow


def _scan(tmp_path, exposure_s, views, seed=1):
    from twin.reconstruct import reconstruct_nxtomo
    from twin.scenario import validate
    from twin.simulate import simulate_to

    data = {"name": "cnr-scaling", "seed": seed,
            "source": {"kvp": 80, "power_w": 5, "filter": "LE3"},
            "geometry": {"source_object_mm": 20, "object_detector_mm": 30,
                         "objective": "flat-panel", "projections": views},
            "detector": {"pixels": [64, 48], "pixel_um": 60, "exposure_s": exposure_s,
                         "gain_nonuniformity": 0.0, "read_noise_e": 0.0, "flats": 2000,
                         "dark_e_per_s": 0.0},
            "phantom": {"kind": "parts", "parts": [{"shape": "cylinder", "material": "Al",
                                                    "radius_mm": 0.4, "height_mm": 1.5}]}}
    out = tmp_path / f"e{exposure_s}_v{views}"
    spec = validate(data)
    simulate_to(spec, out, arch="cpu", quiet=True)
    return reconstruct_nxtomo(out / "projections.h5", out, arch="cpu", quiet=True)["volume"]


def _cnr(vol):
    from skimage.filters import threshold_otsu

    from recon.image_quality import cnr

    mean = vol[10:-10].mean(0)
    disc = mean > threshold_otsu(mean)
    inner = ndi.binary_erosion(disc, iterations=3)
    ring = ndi.binary_dilation(disc, iterations=8) & ~ndi.binary_dilation(disc, iterations=3)
    a = np.zeros(vol.shape, bool)
    b = np.zeros(vol.shape, bool)
    a[10:-10] = inner
    b[10:-10] = ring
    return cnr(vol, a, b, erode_vox=0)


def test_cnr_grows_as_sqrt_exposure_times_views(tmp_path):
    base = _cnr(_scan(tmp_path, 0.005, 60))
    more_exposure = _cnr(_scan(tmp_path, 0.02, 60))
    more_views = _cnr(_scan(tmp_path, 0.005, 240))
    assert abs(more_exposure / base / math.sqrt(4) - 1) < 0.05
    assert abs(more_views / base / math.sqrt(4) - 1) < 0.05
