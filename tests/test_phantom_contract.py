"""Phantom contract: determinism, multi-scale agreement, meshes and bad input."""

import numpy as np
import pytest

from twin.errors import XrmInputError

import phantoms


def test_same_seed_same_grid_and_other_seed_differs():
    a = phantoms.build("nimh_aaa", {"cycles": 120}, seed=1).rasterize(6.0, (2.5, 0, 10), (0.4,) * 3)
    b = phantoms.build("nimh_aaa", {"cycles": 120}, seed=1).rasterize(6.0, (2.5, 0, 10), (0.4,) * 3)
    c = phantoms.build("nimh_aaa", {"cycles": 120}, seed=2).rasterize(6.0, (2.5, 0, 10), (0.4,) * 3)
    assert np.array_equal(a.labels, b.labels)
    assert not np.array_equal(a.labels, c.labels)


def test_microstructure_depends_on_position_only():
    """Two overlapping VOIs on the same voxel lattice agree on their overlap."""
    ph = phantoms.build("nimh_aaa", {"cycles": 120}, seed=1)
    v = 6.0
    a = ph.render(v, (2.5, 0.0, 10.0), (0.48, 0.48, 0.48))
    shift = 20 * v / 1000.0
    b = ph.render(v, (2.5 + shift, 0.0, 10.0 + shift), (0.48, 0.48, 0.48))
    assert np.allclose(np.subtract(b.grid.origin_mm, a.grid.origin_mm), (shift, 0, shift))
    assert np.array_equal(a.grid.labels[20:, :, 20:], b.grid.labels[:-20, :, :-20])


@pytest.mark.parametrize("kind,center,size", [
    ("nimh_aaa", (2.5, 0.0, 10.0), (0.5, 0.5, 0.5)),
    ("coin_na_ion", (3.0, 0.0, -1.0), (0.3, 0.3, 0.9)),
])
def test_fine_and_coarse_grids_agree(kind, center, size):
    ph = phantoms.build(kind, seed=0)
    fine = ph.rasterize(5.0 if kind == "nimh_aaa" else 2.0, center, size, resolve=True)
    coarse = ph.rasterize(5.0 if kind == "nimh_aaa" else 2.0, center, size, resolve=False)
    assert np.array_equal(ph.composite_label(fine.labels), coarse.labels)
    assert not np.array_equal(fine.labels, coarse.labels)


def test_meshes_export(tmp_path):
    import trimesh

    ph = phantoms.build("nimh_aaa")
    paths = ph.export_meshes(tmp_path)
    names = {p.stem.split("_", 1)[1] for p in paths}
    assert {"can", "cap", "negative_active", "negative_foil", "separator",
            "positive_electrode", "tab"} <= names
    m = trimesh.load(tmp_path / "01_can.stl")
    lo, hi = m.bounds
    assert hi[0] - lo[0] == pytest.approx(10.5, rel=0.01)
    assert len(phantoms.build("coin_na_ion").export_meshes(tmp_path / "coin")) >= 8
    assert len(phantoms.build("pouch_lfp").export_meshes(tmp_path / "pouch")) >= 7


def test_bounds_and_labels():
    for kind in phantoms.KINDS:
        ph = phantoms.build(kind)
        assert ph.component_names[0] == "air"
        assert len(ph.materials) == len(ph.component_names) < 256
        (x0, y0, z0), (x1, y1, z1) = ph.bounds_mm
        assert x1 > x0 and y1 > y0 and z1 > z0


@pytest.mark.parametrize("call", [
    lambda: phantoms.build("nimh_aa"),
    lambda: phantoms.build("nimh_aaa", {"cylces": 3}),
    lambda: phantoms.build("nimh_aaa", {"foam": {"thickness_mean": 3}}),
    lambda: phantoms.build("nimh_aaa", {"foam": {"thickness_mean_um": 30, "thickness_std_um": 40}}),
    lambda: phantoms.build("nimh_aaa", {"cycles": -1}),
    lambda: phantoms.build("coin_na_ion", {"spring": "coil"}),
    lambda: phantoms.build("pouch_lfp", {"void_diameter_um": 0}),
    lambda: phantoms.build("nimh_aaa").rasterize(10.0, (30.0, 0.0, 10.0), (1, 1, 1)),
    lambda: phantoms.build("coin_na_ion").rasterize(10.0, (0, 0, 1.0), (1, 1)),
    lambda: phantoms.build("nimh_aaa").rasterize(0.5),
    lambda: phantoms.build("nimh_aaa").rasterize(-1.0),
])
def test_bad_input_is_refused_before_work(call):
    with pytest.raises(XrmInputError):
        call()


def test_error_messages_name_valid_values_and_sizes():
    with pytest.raises(XrmInputError, match="nimh_aaa"):
        phantoms.build("nimh")
    with pytest.raises(XrmInputError, match="cycles"):
        phantoms.build("nimh_aaa", {"cycle": 3})
    with pytest.raises(XrmInputError, match=r"GiB"):
        phantoms.build("nimh_aaa").rasterize(0.5)
    with pytest.raises(XrmInputError, match="outside the cell"):
        phantoms.build("pouch_lfp").rasterize(3.0, (0, 0, 0.5), (1, 1, 1))
    ph = phantoms.build("nimh_aaa")
    assert ph.estimate_bytes(3.6, (3.6864,) * 3) >= 1024 ** 3
