"""End-to-end CLI (issue 6, must-show 4): files per the contract, report keys, exit codes."""

import json
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
from typer.testing import CliRunner

from twin.cli import app

DATA = Path(__file__).parent / "data"
runner = CliRunner()


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "small"
    res = runner.invoke(app, ["--quiet", "run", str(DATA / "small_parts.toml"), "--out", str(out), "--arch", "cpu"])
    assert res.exit_code == 0, res.output
    return out


def test_run_writes_the_contract_files(run_dir):
    for name in ("projections.h5", "recon.h5", "report.json", "report.html", "figures/slices.png"):
        assert (run_dir / name).is_file(), name
    with h5py.File(run_dir / "projections.h5") as f:
        data = f["entry/instrument/detector/data"]
        key = f["entry/instrument/detector/image_key"][...]
        angles = f["entry/sample/rotation_angle"][...]
        assert data.shape == (len(key), 48, 64)
        assert set(np.unique(key)) == {0, 1, 2}
        assert np.count_nonzero(key == 0) == 60
        assert np.allclose(np.diff(angles[key == 0]), 6.0)
    with h5py.File(run_dir / "recon.h5") as f:
        assert f["volume"].dtype == np.float32
        assert f["volume"].attrs["voxel_size_um"] == pytest.approx(60 / 2.5)
        assert len(f["volume"].attrs["origin_mm"]) == 3


def test_report_json_keys(run_dir):
    r = json.loads((run_dir / "report.json").read_text())
    assert r["scenario"] == "small-parts"
    assert r["geometry"]["magnification"] == pytest.approx(2.5)
    assert r["geometry"]["voxel_size_um"] == pytest.approx(24.0)
    assert 20 < r["source"]["mean_energy_kev"] < 80
    assert r["source"]["filter_name"] == "LE3" and "Al" in r["source"]["filter"]  # name and stack
    for k in ("simulate", "reconstruct", "measure"):
        assert r["timing_s"][k] > 0
    assert r["metrology"], "no component measured"
    for comp in r["metrology"].values():
        for key in ("volume_mm3", "surface_mm2", "surface_to_volume_per_mm"):
            assert comp[key] > 0
        assert comp["thickness_um"]["mean"] > 0 and "std" in comp["thickness_um"]
    assert {"truth", "detected", "matched"} <= set(r["defects"])
    assert "cnr" in r["detectability"]
    html = (run_dir / "report.html").read_text()
    assert "<img src='figures/slices.png'>" in html and "Metrology" in html


def test_output_folder_is_not_overwritten_without_force(run_dir):
    res = runner.invoke(app, ["run", str(DATA / "small_parts.toml"), "--out", str(run_dir)])
    assert res.exit_code == 2
    assert "--force" in res.output


@pytest.mark.parametrize("args,pattern", [
    (["simulate", "nimh-zom", "--out", "X"], "did you mean 'nimh-zoom'"),
    (["simulate", str(DATA / "small_parts.toml"), "--out", "X", "--set", "geometry.projection=3"],
     "did you mean 'projections'"),
    (["simulate", str(DATA / "small_parts.toml"), "--out", "X", "--set", "source.kvp='100 kV'"],
     "plain number"),
    (["simulate", str(DATA / "small_parts.toml"), "--out", "X", "--set", "detector.pixels=32,24"],
     "in brackets: [32,24]"),
    (["spectrum", "--kvp", "250"], "30-160"),
])
def test_bad_input_exits_2_with_a_message(tmp_path, args, pattern):
    args = [str(tmp_path / "o") if a == "X" else a for a in args]  # not an "X" inside a path
    res = runner.invoke(app, args)
    assert res.exit_code == 2, res.output
    assert pattern in " ".join(res.output.split())
    assert not (tmp_path / "o").exists()  # checked before the output folder is made


def _small_parts_with(tmp_path, old: str, new: str) -> str:
    """tests/data/small_parts.toml with one line changed, written under tmp_path."""
    text = (DATA / "small_parts.toml").read_text()
    assert old in text
    path = tmp_path / "scenario.toml"
    path.write_text(text.replace(old, new, 1))
    return str(path)


@pytest.mark.parametrize("old,new,key,density_key", [
    ('material = "SS304"', 'material = "Alu"', "phantom.parts[0].material",
     "phantom.parts[0].density_g_cm3"),
    ('filter = "LE3"', 'filter = [{material = "Alu", thickness_mm = 1.0}]',
     "source.filter[0].material", "source.filter[0].density_g_cm3"),
    ('exposure_s = 0.005', 'exposure_s = 0.005\nscintillator = {material = "Alu", thickness_um = 100}',
     "detector.scintillator.material", None),
])
def test_unknown_material_exits_2_naming_the_key_and_allowed_forms(tmp_path, old, new, key, density_key):
    """An unknown material anywhere in the scenario: exit 2 before the output folder is made,
    naming the key, the close matches, every named material and the element / formula forms."""
    out = tmp_path / "o"
    res = runner.invoke(app, ["simulate", _small_parts_with(tmp_path, old, new), "--out", str(out),
                              "--arch", "cpu"])
    assert res.exit_code == 2, res.output
    text = " ".join(res.output.split())
    assert f"{key}: unknown material 'Alu'; did you mean 'Al', 'LuAG', 'aluminum'?" in text
    assert "..." not in text and "Zn" in text and "stainless_steel" in text
    assert "docs/materials.md" in text and "an element symbol" in text
    if density_key:
        assert f"a chemical formula with {density_key}" in text
    assert not out.exists()  # nothing written, not even the folder


def test_formula_without_density_exits_2_naming_the_density_key(tmp_path):
    out = tmp_path / "o"
    res = runner.invoke(app, ["simulate", _small_parts_with(tmp_path, 'material = "Al"', 'material = "Al2O3"'),
                              "--out", str(out), "--arch", "cpu"])
    assert res.exit_code == 2, res.output
    text = " ".join(res.output.split())
    assert "phantom.parts[1].material: unknown material 'Al2O3'" in text
    assert "needs a density: give phantom.parts[1].density_g_cm3 (g/cm3)" in text
    assert not out.exists()


def test_misspelt_voi_key_of_a_parts_scene_exits_2(tmp_path):
    """`[phantom] kind = "parts"` with voi = {center_mm, size}: refused as for battery phantoms."""
    out = tmp_path / "o"
    res = runner.invoke(app, ["simulate", str(DATA / "small_parts.toml"), "--out", str(out), "--set",
                              "phantom.voi={center_mm = [0, 0, 0], size = [1, 1, 1]}"])
    assert res.exit_code == 2, res.output
    text = " ".join(res.output.split())
    assert "unknown key in phantom.voi 'size'; did you mean 'size_mm'? Allowed: center_mm, size_mm" in text
    assert not out.exists()


def test_simulate_refuses_a_scan_that_cannot_fit_naming_the_sizes(tmp_path, monkeypatch):
    """`simulate` with a 4096^2 detector on a "256 MiB machine": exit 2 with the estimate
    (views in flight, what the machine allows), as `run` refuses, and no file written."""
    monkeypatch.setenv("XRM_TWIN_MAX_BYTES", str(256 * 2 ** 20))
    out = tmp_path / "o"
    res = runner.invoke(app, ["simulate", str(DATA / "small_parts.toml"), "--out", str(out), "--arch", "cpu",
                              "--set", "detector.pixels=[4096, 4096]", "--set", "geometry.projections=4"])
    assert res.exit_code == 2, res.output
    text = " ".join(res.output.split())
    assert "4096 x 4096 detector pixels, 4 projections" in text
    assert "of memory (views in flight" in text and "this machine allows 0.2 GiB" in text
    assert not out.exists()  # refused before the folder is made


def test_spectrum_json_contract():
    res = subprocess.run([sys.executable, "-m", "twin.cli", "spectrum", "--kvp", "100", "--filter", "LE6",
                          "--power-w", "14", "--json"], capture_output=True, text=True, check=True)
    d = json.loads(res.stdout.strip().splitlines()[-1])
    assert set(d) >= {"kvp", "energy_kev", "photons", "mean_energy_kev"}
    e, n = np.array(d["energy_kev"]), np.array(d["photons"])
    assert e.shape == n.shape and e.max() < 100
    assert d["mean_energy_kev"] == pytest.approx(float((e * n).sum() / n.sum()))


def test_measure_labels_file(tmp_path):
    """`measure` on a truth-style label file measures the labels directly (analytic sphere)."""
    from twin.materials import get_material
    from twin.truth_io import write_truth
    from twin.volume import LabelGrid

    n, r = 64, 24
    z, y, x = np.ogrid[:n, :n, :n]
    lab = (((x - 31.5) ** 2 + (y - 31.5) ** 2 + (z - 31.5) ** 2) <= r * r).astype(np.uint8)
    write_truth(tmp_path / "t.h5", LabelGrid(lab, 10.0, (0, 0, 0), (get_material("air"), get_material("Al")),
                                              ("air", "ball")))
    res = runner.invoke(app, ["measure", str(tmp_path / "t.h5"), "--out", str(tmp_path / "m")])
    assert res.exit_code == 0, res.output
    m = json.loads((tmp_path / "m" / "report.json").read_text())["metrology"]["ball"]
    v_true = 4 / 3 * np.pi * (r * 0.01) ** 3
    assert m["volume_mm3"] == pytest.approx(v_true, rel=0.01)
    assert m["surface_mm2"] == pytest.approx(4 * np.pi * (r * 0.01) ** 2, rel=0.02)


def test_measure_arch_is_checked_before_any_work(tmp_path):
    """`measure --arch cuda` without a GPU says so before reading the volume; `--arch gpu` names
    the allowed values. (In fresh processes: Taichi picks its backend once per process.)"""
    missing = tmp_path / "nothing_here.h5"
    has_cuda = subprocess.run(
        [sys.executable, "-c", "import sys, taichi as ti; ti.init(arch=ti.cuda); "
         "sys.exit(0 if ti.lang.impl.current_cfg().arch == ti.cuda else 1)"], capture_output=True).returncode == 0

    def cli(*args):
        return subprocess.run([sys.executable, "-m", "twin.cli", "measure", str(missing), "--out",
                               str(tmp_path / "m"), *args], capture_output=True, text=True)

    r = cli("--arch", "cuda")
    assert r.returncode != 0
    text = r.stdout + r.stderr
    assert ("nothing_here.h5" in text) if has_cuda else ("no CUDA device is available" in text), text
    assert not (tmp_path / "m").exists()  # nothing written
    r = cli("--arch", "gpu")
    assert r.returncode != 0 and "auto, cpu, cuda" in r.stdout + r.stderr


def test_a_scan_whose_measurement_cannot_fit_is_refused_before_it_runs(tmp_path, monkeypatch):
    """On a 24 GiB machine the full-scale zoom is refused up front, naming the measurement
    (6 float32 volumes of 1024^3 = 24 GiB, the undenoised volume and the truth), and nothing
    is written; the preview runs the check and passes it. The aged cell's measurement searches
    for cracks and is sized for it."""
    from twin.resources import MEASURE_PEAK_VOLUMES, check_fits, estimate
    from twin.scenario import load_scenario
    from twin.preview import preview_spec

    monkeypatch.setenv("XRM_TWIN_MAX_BYTES", str(24 * 2**30))
    full = load_scenario("nimh-zoom")
    est = estimate(full)
    assert est["volume_bytes"] == 1024 ** 3 * 4
    assert est["measure_bytes"] >= MEASURE_PEAK_VOLUMES * 1024 ** 3 * 4  # + undenoised + truth
    res = runner.invoke(app, ["run", "nimh-zoom", "--out", str(tmp_path / "r")])
    assert res.exit_code == 2
    text = " ".join(res.output.split())
    assert "measurement" in text and "this machine has 24.0 GiB" in text
    assert not (tmp_path / "r" / "projections.h5").exists()
    check_fits(preview_spec(full)[0])  # no error
    from twin.resources import MEASURE_PEAK_VOLUMES_CRACKS, searches_cracks

    aged = load_scenario("nimh-zoom-120cycles")
    assert searches_cracks(aged) and not searches_cracks(full)
    assert estimate(aged)["measure_bytes"] - estimate(full)["measure_bytes"] == pytest.approx(
        (MEASURE_PEAK_VOLUMES_CRACKS - MEASURE_PEAK_VOLUMES) * 1024 ** 3 * 4, rel=0.01)
