"""Must-show 4: NiMH ageing. Delamination volume and crack area are 0 at 0 cycles, grow
monotonically with cycles, and the defect table matches the label and instance grids exactly."""

import numpy as np
import pytest

import phantoms

CYCLES = (0, 20, 40, 80, 120)


def _voi_on(ph, typ, n=3):
    d = ph.damage(120)
    th, z = d[typ]["theta"][n], d[typ]["z_mm"][n]
    t = np.mean(ph.geometry["t_pos"]) if typ == "crack" else np.mean(ph.geometry["t_foil"])
    r = ph.spiral().radius_at(th, t)
    return (r * np.cos(th), r * np.sin(th), z), (0.7, 0.7, 1.2)


@pytest.fixture(scope="module")
def renders():
    out = {}
    base = phantoms.build("nimh_aaa", {"cycles": 120}, seed=3)
    vois = {"crack": _voi_on(base, "crack"), "delamination": _voi_on(base, "delamination")}
    for c in CYCLES:
        ph = phantoms.build("nimh_aaa", {"cycles": c}, seed=3)
        for typ, (cen, size) in vois.items():
            out[(typ, c)] = (ph, ph.render(6.0, cen, size))
    return out


def _measures(ph, r):
    lab = r.grid.labels
    v = (r.grid.voxel_size_um / 1000.0) ** 3
    return {"delamination_mm3": np.count_nonzero(lab == ph.label("delamination")) * v,
            "crack_mm3": np.count_nonzero(lab == ph.label("crack")) * v,
            "crack_area_mm2": sum(d["area_mm2"] for d in r.defects if d["type"] == "crack"),
            "delamination_area_mm2": sum(d["area_mm2"] for d in r.defects
                                         if d["type"] == "delamination")}


@pytest.mark.parametrize("typ", ["crack", "delamination"])
def test_damage_zero_then_monotonic(renders, typ):
    key_v = "crack_mm3" if typ == "crack" else "delamination_mm3"
    key_a = "crack_area_mm2" if typ == "crack" else "delamination_area_mm2"
    series = [_measures(*renders[(typ, c)]) for c in CYCLES]
    vols = [s[key_v] for s in series]
    areas = [s[key_a] for s in series]
    assert vols[0] == 0 and areas[0] == 0
    assert all(b >= a for a, b in zip(vols, vols[1:])), vols
    assert all(b >= a for a, b in zip(areas, areas[1:])), areas
    assert vols[-1] > 10 * (6e-3) ** 3 * 100  # clearly measurable at 120: > 1000 voxels
    assert areas[-1] > 0.05
    # nested: every damaged voxel at c cycles is damaged at 120
    ph, last = renders[(typ, 120)]
    lab_id = ph.label(typ)
    for c in CYCLES[:-1]:
        ph_c, r = renders[(typ, c)]
        assert np.all(last.grid.labels[r.grid.labels == lab_id] == lab_id)


@pytest.mark.parametrize("typ", ["crack", "delamination"])
def test_defect_table_matches_labels_exactly(renders, typ):
    ph, r = renders[(typ, 120)]
    lab, inst = r.grid.labels, r.instances
    defect_labels = [ph.label("crack"), ph.label("delamination")]
    rows = [d for d in r.defects if d["instance"]]
    assert rows
    ids = np.array([d["id"] for d in rows])
    assert len(set(ids.tolist())) == len(ids)
    vox = (r.grid.voxel_size_um / 1000.0) ** 3
    for d in rows:
        sel = inst == d["id"]
        assert np.all(lab[sel] == d["label"])
        assert sel.sum() == d["voxels"] > 0
        assert d["volume_mm3"] == pytest.approx(sel.sum() * vox)
    # every voxel with a defect label belongs to exactly one listed defect
    dmask = np.isin(lab, defect_labels)
    assert np.all(np.isin(inst[dmask], ids))
    assert np.all(~np.isin(inst[~dmask], ids))


def test_truth_file_roundtrip(tmp_path, renders):
    from twin.truth_io import read_truth, write_truth

    ph, r = renders[("crack", 120)]
    g, defects, inst = ph.truth(12.0, *_voi_on(ph, "crack"))
    write_truth(tmp_path / "truth.h5", g, defects, inst)
    back = read_truth(tmp_path / "truth.h5")
    assert np.array_equal(back["labels"], g.labels)
    assert len(back["defects"]) == len(defects)
    assert [m["name"] for m in back["materials"]] == list(ph.component_names)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_defect_kinds_cover_every_damage_site(seed):
    """defect_kinds (what twin.resources sizes the crack search by) names every defect type
    the cell's damage model grows at that age, and none for an unaged cell."""
    import phantoms

    for cycles in (0, 5, 8, 11, 30, 120):
        ph = phantoms.build("nimh_aaa", {"cycles": cycles}, seed=seed)
        kinds = ph.defect_kinds()
        for typ, sites in ph.damage().items():
            if len(sites["s"]):
                assert typ in kinds, (seed, cycles, typ)
        if cycles == 0:
            assert kinds == frozenset()
