"""Bad input (issue 2): clear errors naming the key and the allowed values, before any work."""

import pytest
import trimesh

from tests.twin_helpers import parts_scenario, slab_scenario
from twin.errors import XrmInputError
from twin.filters import resolve_filter
from twin.materials import get_material
from twin.plan import resolve
from twin.scenario import apply_overrides, load_scenario, validate
from twin.spectrum import tube_spectrum


def test_unknown_material_lists_close_matches():
    with pytest.raises(XrmInputError, match=r"unknown material 'SS340'.*did you mean.*'SS304'"):
        get_material("SS340")


def test_unknown_filter_and_scintillator():
    with pytest.raises(XrmInputError, match=r"unknown filter.*'LE7'.*did you mean"):
        resolve_filter("LE7")
    spec = slab_scenario("Al", 1.0, 80, "Air", ideal=False,
                         scintillator={"material": "CsJ", "thickness_um": 100})
    with pytest.raises(XrmInputError, match=r"unknown material 'CsJ'.*'CsI'"):
        resolve(spec)


@pytest.mark.parametrize("kvp", [20, 200])
def test_kvp_out_of_range(kvp):
    with pytest.raises(XrmInputError, match=r"source.kvp must be within 30-160"):
        tube_spectrum(kvp, 10)


@pytest.mark.parametrize("section,key,value,pattern", [
    ("source", "power_w", 0, r"source.power_w must be > 0"),
    ("source", "power_w", 40, r"source.power_w must be <= 25"),
    ("geometry", "source_object_mm", -5.0, r"geometry.source_object_mm must be > 0"),
    ("detector", "pixels", [0, 4], r"detector.pixels must be >= 1"),
    ("source", "kvp", float("nan"), r"source.kvp is NaN"),
    ("geometry", "projections", 10.5, r"geometry.projections.*expected integer"),
    ("source", "kvp", "100 kV", r"give a plain number"),
])
def test_bad_numbers(section, key, value, pattern):
    spec = slab_scenario("Al", 1.0, 80, "Air")
    raw = spec.to_toml_dict()
    raw[section][key] = value
    with pytest.raises(XrmInputError, match=pattern):
        resolve(validate(raw))


def test_negative_filter_thickness():
    with pytest.raises(XrmInputError, match=r"thickness_mm must be > 0"):
        resolve_filter([{"material": "Al", "thickness_mm": -1.0}])


def test_misspelt_key_and_override():
    spec = slab_scenario("Al", 1.0, 80, "Air")
    raw = spec.to_toml_dict()
    raw["geometry"]["projection"] = 10
    with pytest.raises(XrmInputError, match=r"unknown key in \[geometry\] 'projection'.*did you mean 'projections'"):
        validate(raw)
    with pytest.raises(XrmInputError, match=r"--set geometry.binnig=2.*did you mean 'binning'"):
        apply_overrides(spec.to_toml_dict(), ["geometry.binnig=2"], "x")
    with pytest.raises(XrmInputError, match=r"no scenario file or built-in named 'nimh-zom'.*'nimh-zoom'"):
        load_scenario("nimh-zom")


def test_recon_keys_and_filtered_dtype_are_checked_before_any_work():
    spec = slab_scenario("Al", 1.0, 80, "Air")
    raw = spec.to_toml_dict()
    raw.setdefault("recon", {})["filter_dtype"] = "float16"
    with pytest.raises(XrmInputError, match=r"unknown key in \[recon\] 'filter_dtype'.*did you mean 'filtered_dtype'"):
        validate(raw)
    raw["recon"] = {"filtered_dtype": "float64"}
    with pytest.raises(XrmInputError, match=r"unknown recon.filtered_dtype 'float64'.*Allowed: float16, float32"):
        validate(raw)
    raw["recon"] = {"filtered_dtype": "float16"}
    assert validate(raw).recon["filtered_dtype"] == "float16"


def test_non_watertight_mesh_is_refused_and_repairable(tmp_path):
    box = trimesh.creation.box(extents=(1, 1, 1))
    holed = trimesh.Trimesh(box.vertices, box.faces[:-1], process=False)
    path = tmp_path / "holed.stl"
    holed.export(path)
    parts = [{"shape": "mesh", "file": str(path), "material": "Al"}]
    with pytest.raises(XrmInputError, match=r"holed.stl.*not watertight.*repair = true"):
        resolve(parts_scenario(parts))
    parts[0]["repair"] = True
    plan = resolve(parts_scenario(parts))  # trimesh fills the missing triangle
    assert len(plan.scene.parts) == 1


def test_self_intersecting_mesh_is_refused(tmp_path):
    a = trimesh.creation.box(extents=(1, 1, 1))
    b = trimesh.creation.box(extents=(1, 1, 1))
    b.apply_translation((0.5, 0, 0))
    both = trimesh.util.concatenate([a, b])  # two overlapping closed shells in one file
    path = tmp_path / "overlap.stl"
    both.export(path)
    with pytest.raises(XrmInputError, match=r"overlap.stl.*self-intersecting"):
        resolve(parts_scenario([{"shape": "mesh", "file": str(path), "material": "Al"}]))


def test_overlapping_parts_need_nesting_or_priority():
    parts = [{"shape": "sphere", "material": "Al", "radius_mm": 1.0, "subdivisions": 3},
             {"shape": "sphere", "material": "Fe", "radius_mm": 1.0, "subdivisions": 3,
              "center_mm": [0.8, 0, 0]}]
    with pytest.raises(XrmInputError, match=r"overlap partially"):
        resolve(parts_scenario(parts))
    same = [dict(parts[0]), dict(parts[0], material="Fe")]
    with pytest.raises(XrmInputError, match=r"occupy the same space.*priority"):
        resolve(parts_scenario(same))
    same[1]["priority"] = 2
    same[0]["priority"] = 1
    plan = resolve(parts_scenario(same))
    assert {m.name for m in plan.scene.materials} == {"Al", "Fe"}


def test_nested_parts_inner_replaces_outer():
    """A rod inside a sphere: the rod's path length is taken from the sphere's material."""
    parts = [{"shape": "sphere", "material": "Al", "radius_mm": 1.0},
             {"shape": "cylinder", "material": "Fe", "radius_mm": 0.2, "height_mm": 0.8, "axis": "y"}]
    plan = resolve(parts_scenario(parts, pixels=(33, 33), pixel_um=20.0))
    g = plan.geometry
    lengths, _ = plan.scene.path_lengths(g.vectors(), g.rows, g.cols, parallel=True, arch="cpu")
    al, fe = (list(m.name for m in plan.scene.materials).index(n) for n in ("Al", "Fe"))
    centre = lengths[0, :, 16, 16]
    assert centre[fe] == pytest.approx(0.8, rel=1e-3)
    assert centre[al] == pytest.approx(2.0 - 0.8, rel=2e-3)


def test_nan_in_mesh_vertices(tmp_path):
    parts = [{"shape": "sphere", "material": "Al", "radius_mm": 1.0, "center_mm": [0, float("nan"), 0]}]
    with pytest.raises(XrmInputError, match=r"center_mm.*finite"):
        resolve(parts_scenario(parts))
