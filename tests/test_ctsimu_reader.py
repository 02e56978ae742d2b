"""CTSimU reader: geometry against the ctsimu toolbox's own geometry, bad input, units."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest

from twin.ctsimu.reader import read_scenario
from twin.errors import XrmInputError

ctsimu = pytest.importorskip("ctsimu")

SHIPPED = sorted((Path(ctsimu.__file__).parent / "evaluation" / "scenarios").glob("*.json"))


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """All shipped 2D-test scenarios with stand-ins for their STL and spectrum files."""
    from twin.ctsimu.assets import prepare_test_folder

    out = tmp_path_factory.mktemp("ctsimu_scen")
    return {f.name: prepare_test_folder(f, out / f.stem) for f in SHIPPED}


def _a(v) -> np.ndarray:
    """A ctsimu Vector as a numpy array."""
    return np.array([v.x(), v.y(), v.z()], float)


def _toolbox_vectors(path_or_dict, frame: int, pu: float, pv: float) -> tuple[np.ndarray, object]:
    from ctsimu.scenario import Scenario

    s = Scenario(json_dict=path_or_dict) if isinstance(path_or_dict, dict) else Scenario(str(path_or_dict))
    s.set_frame(frame)
    g = s.current_geometry()
    c = _a(g.stage.center)
    b = np.stack([_a(g.stage.u), _a(g.stage.v), _a(g.stage.w)])
    src = b @ (_a(g.source.center) - c)
    det = b @ (_a(g.detector.center) - c)
    u = b @ _a(g.detector.u) * pu
    v = b @ _a(g.detector.v) * pv
    return np.concatenate([src, det, u, v]), s


def test_every_shipped_scenario_is_read(folder):
    assert len(SHIPPED) == 9
    for name, path in folder.items():
        sc = read_scenario(path)
        assert sc.vectors.shape == (1, 12)
        assert sc.cols * sc.rows > 0 and sc.spectrum.photons_per_s_sr.sum() > 0


@pytest.mark.parametrize("name", [f.name for f in SHIPPED])
def test_geometry_matches_toolbox(folder, name):
    sc = read_scenario(folder[name])
    want, _ = _toolbox_vectors(folder[name], 0, sc.pitch_u_mm, sc.pitch_v_mm)
    np.testing.assert_allclose(sc.vectors[0], want, atol=1e-7 * max(1.0, np.abs(want).max()))


def test_sample_placement_matches_toolbox(folder):
    """HS-1: foil rotated about t, s and r with pivots; compare with the toolbox's frame."""
    from twin.meshes import load_mesh_file

    name = next(n for n in folder if n.startswith("2D-HS-1"))
    sc = read_scenario(folder[name])
    _, s = _toolbox_vectors(folder[name], 0, 1, 1)
    cs = s.samples[0].coordinate_system
    raw = json.loads(folder[name].read_text())
    tri = load_mesh_file(folder[name].parent / raw["samples"][0]["file"]["value"])
    flat = tri.reshape(-1, 3)
    tri = tri - 0.5 * (flat.min(0) + flat.max(0))
    basis = np.stack([_a(cs.u), _a(cs.v), _a(cs.w)])
    want = _a(cs.center) + tri @ basis
    np.testing.assert_allclose(sc.parts[0].triangles, want, atol=1e-9)


def test_multi_frame_with_stage_deviations_matches_toolbox(folder):
    """A CT scan (several frames, CW) with an axis wobble and a shift, frame by frame."""
    name = next(n for n in folder if n.startswith("2D-WE-2"))
    data = json.loads(folder[name].read_text())
    data["acquisition"].update(number_of_projections=5, stop_angle={"value": 360, "unit": "deg"},
                               direction="CW")
    data["geometry"]["stage"]["deviations"] = [
        {"type": "rotation", "axis": "u", "amount": {"value": 2.0, "unit": "deg"}},
        {"type": "translation", "axis": "x", "amount": {"value": 0.3, "unit": "mm"}},
        {"type": "rotation", "axis": {"x": {"value": 1}, "y": {"value": 1}, "z": {"value": 0}},
         "pivot": {"u": {"value": 1.0, "unit": "mm"}, "v": {"value": 0, "unit": "mm"},
                   "w": {"value": 2.0, "unit": "mm"}}, "amount": {"value": 0.02, "unit": "rad"}}]
    sc = read_scenario(data=data, base_dir=folder[name].parent)
    assert sc.vectors.shape == (5, 12)
    assert not np.allclose(sc.vectors[0], sc.vectors[1])
    for i in range(5):
        want, _ = _toolbox_vectors(copy.deepcopy(data), i, sc.pitch_u_mm, sc.pitch_v_mm)
        np.testing.assert_allclose(sc.vectors[i], want, atol=1e-6)


# ------------------------------------------------------------------------------ bad input
def _fb2(folder):
    name = next(n for n in folder if n.startswith("2D-FB-2"))
    return json.loads(folder[name].read_text()), folder[name].parent


def test_drift_is_refused_by_key_then_approximated(folder):
    data, base = _fb2(folder)
    data["geometry"]["detector"]["center"]["x"]["drifts"] = [{"value": [0, 1], "unit": "mm"}]
    data["detector"]["image_lag"] = {"value": 0.05}
    with pytest.raises(XrmInputError) as e:
        read_scenario(data=data, base_dir=base)
    msg = str(e.value)
    assert "geometry.detector.center.x.drifts" in msg and "detector.image_lag" in msg
    sc = read_scenario(data=data, base_dir=base, approximate=True)
    assert any("geometry.detector.center.x.drifts" in n for n in sc.notes)
    assert any("image_lag" in n for n in sc.notes)


def test_unsupported_keys_are_named(folder):
    data, base = _fb2(folder)
    data["environment"]["material_id"] = "Air"
    data["acquisition"]["scattering"] = True
    data["detector"]["unsharpness"]["mtf"] = {"value": "mtf.csv"}
    with pytest.raises(XrmInputError) as e:
        read_scenario(data=data, base_dir=base)
    for key in ("environment.material_id", "acquisition.scattering", "detector.unsharpness.mtf"):
        assert key in str(e.value)


def test_missing_and_unreadable_spectrum_name_the_path(folder, tmp_path):
    data, base = _fb2(folder)
    data["source"]["spectrum"]["file"]["value"] = "nope.csv"
    with pytest.raises(XrmInputError, match="nope.csv"):
        read_scenario(data=data, base_dir=base)
    (tmp_path / "bad.csv").write_bytes(b"\xff\xfe\x00garbage")
    data["source"]["spectrum"]["file"]["value"] = "bad.csv"
    with pytest.raises(XrmInputError, match="bad.csv"):
        read_scenario(data=data, base_dir=tmp_path)


def test_missing_and_unreadable_stl_name_the_path(folder, tmp_path):
    name = next(n for n in folder if n.startswith("2D-WE-2"))
    data = json.loads(folder[name].read_text())
    data["samples"][0]["file"]["value"] = "missing.stl"
    with pytest.raises(XrmInputError, match="missing.stl"):
        read_scenario(data=data, base_dir=tmp_path)
    (tmp_path / "broken.stl").write_text("solid x\nfacet normal 0 0 1\nendsolid\n")
    data["samples"][0]["file"]["value"] = "broken.stl"
    with pytest.raises(XrmInputError, match="broken.stl"):
        read_scenario(data=data, base_dir=tmp_path)


def test_units_are_converted(folder):
    data, base = _fb2(folder)
    a = read_scenario(data=copy.deepcopy(data), base_dir=base)
    data["geometry"]["detector"]["center"]["x"] = {"value": 3.0, "unit": "cm"}
    data["detector"]["pixel_pitch"]["u"] = {"value": 400.0, "unit": "um"}
    data["detector"]["pixel_pitch"]["v"] = {"value": 0.04, "unit": "cm"}
    b = read_scenario(data=data, base_dir=base)
    np.testing.assert_allclose(a.vectors, b.vectors, atol=1e-12)
    data["detector"]["pixel_pitch"]["u"]["unit"] = "furlong"
    with pytest.raises(XrmInputError, match="furlong"):
        read_scenario(data=data, base_dir=base)


def test_solid_angle_is_exact():
    """Pixel solid angles tile the exact solid angle of the whole detector."""
    from twin.ctsimu.run import pixel_solid_angles_sr

    h = 30.0
    vec = np.array([0, 0, 0, 0, h, 0, 0.4, 0, 0, 0, 0, 0.4], float)
    om = pixel_solid_angles_sr(vec, 501, 501)
    x = 501 * 0.4 / 2
    whole = 4 * np.arctan(x * x / (h * np.sqrt(h * h + 2 * x * x)))
    assert om.sum() == pytest.approx(whole, rel=1e-9)
    # the central pixel sees ~ A / h^2, a corner pixel ~ A cos^3 / r^2
    assert om[250, 250] == pytest.approx(0.16 / h ** 2, rel=1e-3)
    r = np.hypot(h, np.hypot(100.0, 100.0))
    assert om[0, 0] == pytest.approx(0.16 * h / r ** 3, rel=1e-2)
