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


def _flat(msg: str) -> str:
    return " ".join(str(msg).split())


def _checked(parts, **kw):
    """A parts scenario whose materials are looked up as `load_scenario` does."""
    from twin.scenario import check_materials

    spec = parts_scenario(parts, **kw)
    check_materials(spec)
    return spec


@pytest.mark.parametrize("where,key,density_key", [
    ("part", "phantom.parts[0].material", "phantom.parts[0].density_g_cm3"),
    ("filter", "source.filter[0].material", "source.filter[0].density_g_cm3"),
    ("override", "source.filter_overrides.LE2[0].material",
     "source.filter_overrides.LE2[0].density_g_cm3"),
    ("scintillator", "detector.scintillator.material", None),
])
def test_unknown_material_names_its_key_and_every_allowed_form(where, key, density_key):
    """`material = "Alu"` anywhere in a scenario: refused when it is read (`load_scenario`,
    `simulate_to`), naming the key, the close matches, every named material (no "...") and the
    element / formula forms."""
    from twin.materials import ALIASES, named_materials

    parts = [{"shape": "box", "material": "Al", "size_mm": [0.4, 0.4, 0.4]}]
    kw = {}
    if where == "part":
        parts[0]["material"] = "Alu"
    elif where == "filter":
        kw["source"] = {"filter": [{"material": "Alu", "thickness_mm": 1.0}]}
    elif where == "override":
        kw["source"] = {"filter_overrides": {"LE2": [{"material": "Alu", "thickness_mm": 1.0}]}}
    else:
        kw["detector"] = {"ideal": False, "scintillator": {"material": "Alu", "thickness_um": 100}}
    with pytest.raises(XrmInputError) as err:
        _checked(parts, **kw)
    msg = _flat(err.value)
    assert f"{key}: unknown material 'Alu'; did you mean 'Al', 'LuAG', 'aluminum'?" in msg
    assert "..." not in msg
    for name in list(named_materials()) + list(ALIASES):
        assert name in msg, name
    assert "docs/materials.md" in msg and "element symbol" in msg
    if density_key:
        assert f"chemical formula with {density_key}" in msg
    else:  # the scintillator table takes no density: no formula offered
        assert "formula" not in msg


def test_formula_without_density_names_the_density_key():
    """A formula that is a named material takes the library's density (SiO2: amorphous silica,
    2.2 g/cm3); any other formula needs density_g_cm3, even where xraydb lists densities for
    it (they are named in the message, not picked)."""
    assert get_material("SiO2").density_g_cm3 == pytest.approx(2.2)
    assert _checked([{"shape": "box", "material": "SiO2", "size_mm": [1, 1, 1]}])
    with pytest.raises(XrmInputError) as err:
        _checked([{"shape": "box", "material": "Al", "size_mm": [1, 1, 1]},
                  {"shape": "sphere", "material": "Al2O3", "radius_mm": 0.1}])
    msg = _flat(err.value)
    assert "phantom.parts[1].material: unknown material 'Al2O3'" in msg
    assert "As a chemical formula, 'Al2O3' needs a density: give phantom.parts[1].density_g_cm3" in msg
    assert "sapphire 4 g/cm3" in msg  # xraydb's materials table
    spec = _checked([{"shape": "box", "material": "Al2O3", "density_g_cm3": 3.95,
                      "size_mm": [1, 1, 1]}])
    assert spec.phantom["parts"][0]["density_g_cm3"] == 3.95
    with pytest.raises(XrmInputError, match=r"phantom.parts\[0\].density_g_cm3 must be a finite "
                                            r"number > 0 \(g/cm3\), got -1"):
        _checked([{"shape": "box", "material": "Al2O3", "density_g_cm3": -1, "size_mm": [1, 1, 1]}])
    with pytest.raises(XrmInputError) as err:  # no density key beside a scintillator
        _checked([{"shape": "box", "material": "Al", "size_mm": [1, 1, 1]}],
                 detector={"ideal": False, "scintillator": {"material": "Gd2O2S", "thickness_um": 20}})
    msg = _flat(err.value)
    assert "detector.scintillator.material: unknown material 'Gd2O2S'" in msg
    assert "would need a density, which this key does not take" in msg
    assert "the library has this formula as 'GOS' (7.3 g/cm3)" in msg


@pytest.mark.parametrize("kind", ["parts", "coin_na_ion"])
def test_voi_keys_are_checked_for_every_phantom_kind(kind):
    """`voi = {center_mm = [0, 0, 0], size = [1, 1, 1]}` is refused for parts as for battery
    phantoms, naming the bad key and the allowed ones, when the scenario is read."""
    raw = parts_scenario([{"shape": "box", "material": "Al", "size_mm": [1, 1, 1]}]).to_toml_dict()
    if kind != "parts":
        raw["phantom"] = {"kind": kind}
    raw["phantom"]["voi"] = {"center_mm": [0, 0, 0], "size": [1, 1, 1]}
    with pytest.raises(XrmInputError) as err:
        validate(raw)
    msg = _flat(err.value)
    assert "unknown key in phantom.voi 'size'; did you mean 'size_mm'? Allowed: center_mm, size_mm" in msg
    raw["phantom"]["voi"] = {"center_mm": [0, 0, 0]}
    with pytest.raises(XrmInputError, match=r"phantom.voi needs size_mm"):
        validate(raw)
    raw["phantom"]["voi"] = {"center_mm": [0, 0, 0], "size_mm": [1, 1]}
    with pytest.raises(XrmInputError, match=r"phantom.voi.size_mm must be 3 finite numbers"):
        validate(raw)
    raw["phantom"]["voi"] = {"center_mm": [0, 0, 0], "size_mm": [1, 0, 1]}
    with pytest.raises(XrmInputError, match=r"phantom.voi.size_mm must be > 0"):
        validate(raw)
    raw["phantom"]["voi"] = {"center_mm": [0, 0, 0], "size_mm": [1, 1, 1]}
    assert validate(raw).phantom["voi"]["size_mm"] == [1, 1, 1]


def _huge_scan(monkeypatch, tmp_path, pixels, projections):
    """The audit's scan through the python API, with resolve (the first allocation: the
    pixel solid-angle map) replaced by a tripwire."""
    import twin.simulate as sim

    def tripwire(*a, **k):
        raise AssertionError("resolved (allocated) before the memory and disk check")

    monkeypatch.setattr(sim, "resolve", tripwire)
    spec = parts_scenario([{"shape": "box", "material": "Al", "size_mm": [1, 1, 1]}],
                          pixels=pixels, projections=projections)
    return sim, spec, tmp_path / "out"


def test_simulate_refuses_a_scan_that_cannot_fit_in_memory_before_allocating(tmp_path, monkeypatch):
    """60000 x 60000 pixels and 30000 views: `simulate` refuses up front (XrmInputError, exit
    code 2), naming the memory it needs (the views in flight, the pixel maps) against what the
    machine allows, and the output size against the free disk; nothing is written."""
    monkeypatch.setenv("XRM_TWIN_MAX_BYTES", str(24 * 2 ** 30))
    sim, spec, out = _huge_scan(monkeypatch, tmp_path, (60000, 60000), 30000)
    with pytest.raises(XrmInputError) as err:
        sim.simulate_to(spec, out, arch="cpu", quiet=True)
    msg = _flat(err.value)
    assert "60000 x 60000 detector pixels, 30000 projections" in msg
    assert "of memory (views in flight" in msg and "3,600,000,000 pixels x 1 material" in msg
    assert "this machine allows 20.4 GiB" in msg  # 85 % of 24 GiB, the rule of `run`
    assert "of disk (projections.h5 402358.2 GiB" in msg and "free" in msg
    assert "detector.pixels" in msg and "geometry.projections" in msg
    assert not out.exists()


def test_simulate_refuses_output_larger_than_the_free_disk(tmp_path, monkeypatch):
    import shutil
    from collections import namedtuple

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda p: usage(2 ** 40, 2 ** 40 - 2 ** 30, 2 ** 30))
    monkeypatch.setenv("XRM_TWIN_MAX_BYTES", str(2 ** 50))
    sim, spec, out = _huge_scan(monkeypatch, tmp_path, (1024, 1024), 3000)
    est = sim.simulate_estimate(spec)
    assert est["projections_file_bytes"] == (3000 + 2) * 1024 * 1024 * 4  # ideal: float32
    with pytest.raises(XrmInputError) as err:
        sim.simulate_to(spec, out, arch="cpu", quiet=True)
    msg = _flat(err.value)
    assert "of disk (projections.h5 11.7 GiB" in msg and "has 1.0 GiB free" in msg
    assert "of memory" not in msg
    assert not out.exists()


def test_simulate_refuses_an_unknown_material_by_its_key_before_any_work(tmp_path, monkeypatch):
    """The python API (a spec from `validate`, which checks keys and types only) refuses in
    `simulate_to` before resolving or writing anything."""
    import twin.simulate as sim

    monkeypatch.setattr(sim, "resolve", lambda *a, **k: pytest.fail("resolved before the check"))
    spec = parts_scenario([{"shape": "box", "material": "Al", "size_mm": [1, 1, 1]},
                           {"shape": "box", "material": "Alu", "size_mm": [1, 1, 1]}])
    with pytest.raises(XrmInputError, match=r"phantom.parts\[1\].material: unknown material 'Alu'"):
        sim.simulate_to(spec, tmp_path / "out", arch="cpu", quiet=True)
    assert not (tmp_path / "out").exists()
