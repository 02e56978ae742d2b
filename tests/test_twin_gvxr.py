"""Issue 2, must-show 4: a two-material mesh scene agrees with gVirtualXray (gVXR).

A stainless-steel (SS304) tube around an aluminium rod, cone beam, one view. Both tools get
the same triangles (our primitives exported to STL with trimesh and read by gVXR in mm), the
same material compositions and densities, the same spectrum (the plan's energy bins and photon
numbers: 100 kV tube, LE3 filter) and the same geometry (source at ``(0, -a, 0)``, detector
centre at ``(0, b, 0)``, columns along +x, rows along +z, pixel centres at
``(i - (n - 1) / 2) x pitch``). Our side uses the ideal (energy-integrating, noiseless,
unblurred) detector; gVXR's default image is the total energy per pixel. Both are
flat-field normalised, which removes the inverse-square / obliquity factor that only our side
applies.

Attenuation: gVXR 2.1 evaluates ``mu/rho`` from the same Elam tables as xraydb (checked
below at rtol 1e-9 for every element of the scene at the plan's bin energies; they agree to
~1e-16), so the polychromatic images can be compared directly, without falling back to per-bin
or line-integral comparisons.

The geometry keeps every pixel centre at least 0.27 pixel away from every silhouette (the
tangent rays of the tube's outer and inner walls and of the rod), and the compared rows are
away from the rod's flat end: a ray grazing a wall has a chord whose length changes tens of
times faster than the ray moves, so float32 rounding alone (in either tool) gave 0.5 % at a
pixel grazing the tube in a trial geometry, and gives 3 % in row 21 here, whose rays skim the
rod's end face. Everywhere else the whole image agrees to ~3e-5.

The test skips where gVXR is not installed or cannot open an OpenGL (EGL) context, unless
``XRM_TWIN_REQUIRE_GVXR=1`` is set (then it fails: for CI, where a skip would hide a missing
system library).
"""

from __future__ import annotations

import os

import numpy as np
import pytest

from tests.twin_helpers import parts_scenario
from twin.acquisition import flats_and_darks, iter_projections
from twin.plan import resolve

SOURCE_OBJECT_MM = 60.0
OBJECT_DETECTOR_MM = 40.0
PIXELS = (256, 32)          # columns, rows
PIXEL_UM = 30.0             # at the detector; 18 um at the object (M = 5/3)
#: rows compared: one through the tube and the rod, one through the tube only
ROW_ROD, ROW_TUBE = 28, 3
TOLERANCE = 5e-3            # max relative difference where transmission > 1e-3

PARTS = [
    {"shape": "tube", "name": "tube", "material": "SS304", "radius_mm": 1.55,
     "inner_radius_mm": 1.15, "height_mm": 3.0, "sections": 256},
    # off-centre in x (tells left from right) and above the centre in z (tells up from down)
    {"shape": "cylinder", "name": "rod", "material": "Al", "radius_mm": 0.9, "height_mm": 1.0,
     "center_mm": [0.05, 0.0, 0.6], "sections": 256},
]


def _required() -> bool:
    """``XRM_TWIN_REQUIRE_GVXR=1`` (CI where gVXR is installed): fail instead of skipping."""
    return os.environ.get("XRM_TWIN_REQUIRE_GVXR", "") not in ("", "0")


def _gvxr():
    """gVXR's Python module, or skip."""
    if not _required():
        pytest.importorskip("gvxrPython3")
    from gvxrPython3 import gvxr

    return gvxr


def scene_plan():
    spec = parts_scenario(PARTS, pixels=PIXELS, pixel_um=PIXEL_UM, beam="cone", projections=1,
                          source_object_mm=SOURCE_OBJECT_MM, object_detector_mm=OBJECT_DETECTOR_MM,
                          source={"kvp": 100, "power_w": 10, "filter": "LE3"})
    return resolve(spec)


def twin_transmission(plan) -> np.ndarray:
    """Flat-field-normalised transmission of view 0, (rows, cols)."""
    img = np.concatenate([c.images for c in iter_projections(plan, arch="cpu")])[0]
    flats, darks = flats_and_darks(plan)
    return ((img - darks[0]) / (flats[0] - darks[0])).astype(np.float64)


def write_stl(part, path) -> None:
    import trimesh

    tri = np.asarray(part.triangles, float)
    mesh = trimesh.Trimesh(vertices=tri.reshape(-1, 3), faces=np.arange(3 * len(tri)).reshape(-1, 3),
                           process=True)
    mesh.export(path)


def setup_gvxr(gvxr, plan, folder) -> None:
    """The plan's geometry, spectrum and parts in gVXR (lengths in mm, energies in keV)."""
    g = plan.geometry
    gvxr.removePolygonMeshesFromSceneGraph()
    gvxr.setSourcePosition(0.0, -g.source_object_mm, 0.0, "mm")
    gvxr.usePointSource()
    gvxr.resetBeamSpectrum()
    # ideal detector: weights[0] = photons per bin (x exposure); gVXR integrates N(E) E itself
    for e_kev, n in zip(plan.energy_kev, plan.weights[0]):
        gvxr.addEnergyBinToSpectrum(float(e_kev), "keV", float(n))
    gvxr.setDetectorPosition(0.0, g.object_detector_mm, 0.0, "mm")
    gvxr.setDetectorUpVector(0, 0, 1)
    gvxr.setDetectorRightVector(1, 0, 0)
    gvxr.setDetectorNumberOfPixels(g.cols, g.rows)
    pitch_mm = g.scintillator_pixel_um / 1000.0
    gvxr.setDetectorPixelSize(pitch_mm, pitch_mm, "mm")
    for part in plan.scene.parts:
        path = str(folder / f"{part.name}.stl")
        write_stl(part, path)
        # False: loadMeshFile would otherwise add the mesh to the renderer itself, and the
        # explicit addPolygonMeshAsInnerSurface below would then count it twice
        gvxr.loadMeshFile(part.name, path, "mm", False)
        els = [el for el, _ in part.material.mass_fractions]
        ws = [float(w) for _, w in part.material.mass_fractions]
        if len(els) == 1:
            gvxr.setElement(part.name, els[0])
        else:
            gvxr.setMixture(part.name, els, ws)
        gvxr.setDensity(part.name, float(part.material.density_g_cm3), "g/cm3")
        gvxr.addPolygonMeshAsInnerSurface(part.name)


def gvxr_transmission(gvxr) -> np.ndarray:
    """gVXR's total-energy image divided by its white (flat) image, (rows, cols)."""
    img = np.asarray(gvxr.computeXRayImage(), np.float64)
    white = np.asarray(gvxr.getWhiteImage(), np.float64)
    return img / white


@pytest.fixture(scope="module")
def gvxr_ctx():
    gvxr = _gvxr()
    try:
        gvxr.createOpenGLContext()
    except Exception as exc:  # no EGL / OpenGL: the peer is not usable here
        if _required():
            raise
        pytest.skip(f"gVXR cannot create an OpenGL context: {exc}")
    yield gvxr
    gvxr.removePolygonMeshesFromSceneGraph()


@pytest.fixture(scope="module")
def both(gvxr_ctx, tmp_path_factory):
    plan = scene_plan()
    ours = twin_transmission(plan)
    setup_gvxr(gvxr_ctx, plan, tmp_path_factory.mktemp("gvxr_meshes"))
    theirs = gvxr_transmission(gvxr_ctx)
    return plan, ours, theirs


def row_difference(ours_row: np.ndarray, theirs_row: np.ndarray) -> tuple[float, float]:
    m = ours_row > 1e-3
    rel = np.abs(theirs_row[m] / ours_row[m] - 1.0)
    return float(rel.max()), float(rel.mean())


def test_gvxr_uses_the_same_attenuation_tables(gvxr_ctx):
    import xraydb

    plan = scene_plan()
    elements = sorted({el for p in plan.scene.parts for el, _ in p.material.mass_fractions})
    for el in elements:
        theirs = np.array([gvxr_ctx.getMassAttenuationFromElement(el, float(e), "keV")
                           for e in plan.energy_kev])
        ours = xraydb.mu_elam(el, plan.energy_kev * 1000.0, kind="total")
        np.testing.assert_allclose(theirs, ours, rtol=1e-9, err_msg=el)


def test_detector_row_agrees_with_gvxr(both):
    plan, ours, theirs = both
    assert ours.shape == theirs.shape == (PIXELS[1], PIXELS[0])
    # the scene is really there: air at the edges, steel walls, the rod in one row only
    assert np.allclose(ours[:, :3], 1.0) and np.allclose(theirs[:, :3], 1.0)
    assert ours[ROW_ROD].min() < 0.3 and ours[ROW_TUBE].min() < 0.3
    assert ours[ROW_ROD, PIXELS[0] // 2] < 0.9 * ours[ROW_TUBE, PIXELS[0] // 2]
    for row in (ROW_ROD, ROW_TUBE):
        mx, mean = row_difference(ours[row], theirs[row])
        assert mx <= TOLERANCE, f"row {row}: max relative difference {mx:.2e} (mean {mean:.2e})"


def test_orientation_matters(both):
    """A flipped gVXR image would not agree: the comparison really checks the conventions."""
    _, ours, theirs = both
    assert row_difference(ours[ROW_ROD], theirs[ROW_ROD, ::-1])[0] > 4 * TOLERANCE
    assert row_difference(ours[ROW_ROD], theirs[PIXELS[1] - 1 - ROW_ROD])[0] > 4 * TOLERANCE
