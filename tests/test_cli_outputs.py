"""The CLI's output folder and its messages: a bad scenario touches nothing, ``--force`` replaces
only xrm-twin's own outputs, listings survive a pipe, and error text is shown as written."""

import json
import subprocess
import sys
from pathlib import Path

import h5py
import pytest
from typer.testing import CliRunner

from twin.cli import OUTPUT_NAMES, app
from twin.errors import XrmInputError
from twin.reconstruct import recon_options

DATA = Path(__file__).parent / "data"
runner = CliRunner()


def _text(res) -> str:
    return " ".join(res.output.split())


@pytest.mark.parametrize("command,override,pattern", [
    ("simulate", "source.filter='HE9'", "unknown filter (source.filter) 'HE9'"),
    ("run", "source.filter='HE9'", "unknown filter (source.filter) 'HE9'"),
    ("run", "recon.algorithm='art'", "unknown recon.algorithm 'art'; did you mean 'sirt'?"),
    ("simulate", "recon.algorithm='art'", "unknown recon.algorithm 'art'"),
    ("run", "recon.denoise='bm3d'", "unknown recon.denoise method 'bm3d'"),
    ("run", "geometry.objective='10x'", "10x"),
])
def test_a_bad_value_creates_no_output_folder(tmp_path, command, override, pattern):
    """Values are checked (the scenario resolved) before the folder is made: a bad
    [recon] value no longer waits for the simulation to end."""
    out = tmp_path / "o"
    res = runner.invoke(app, [command, str(DATA / "small_parts.toml"), "--out", str(out),
                              "--arch", "cpu", "--set", override])
    assert res.exit_code == 2, res.output
    assert pattern in _text(res)
    assert not out.exists()


def test_force_with_a_bad_scenario_keeps_the_folder(tmp_path):
    out = tmp_path / "o"
    out.mkdir()
    (out / "notes.txt").write_text("precious")
    (out / "report.json").write_text("{}")
    res = runner.invoke(app, ["simulate", str(DATA / "small_parts.toml"), "--out", str(out), "--force",
                              "--arch", "cpu", "--set", "source.filter='HE9'"])
    assert res.exit_code == 2, res.output
    assert (out / "notes.txt").read_text() == "precious"
    assert (out / "report.json").read_text() == "{}"  # not even xrm-twin's own outputs go


def test_force_replaces_only_what_xrm_twin_writes(tmp_path):
    out = tmp_path / "o"
    (out / "figures").mkdir(parents=True)
    (out / "figures" / "old.png").write_bytes(b"old")
    (out / "report.json").write_text('{"old": true}')
    (out / "notes.txt").write_text("precious")
    (out / "mine").mkdir()
    res = runner.invoke(app, ["simulate", str(DATA / "small_parts.toml"), "--out", str(out), "--force",
                              "--arch", "cpu", "--set", "geometry.projections=4"])
    assert res.exit_code == 0, res.output
    assert (out / "notes.txt").read_text() == "precious" and (out / "mine").is_dir()
    assert not (out / "report.json").exists() and not (out / "figures").exists()  # earlier outputs
    assert "kept 2 entries" in _text(res) and "mine" in _text(res)
    with h5py.File(out / "projections.h5") as f:
        assert f["entry/instrument/detector/data"].shape[1:] == (48, 64)
    assert {"projections.h5", "report.json", "figures", "recon.h5", "truth.h5"} <= OUTPUT_NAMES


def test_scenarios_listing_in_a_pipe_and_as_json():
    """Piped, the listing is not cut to a terminal's 80 columns: every built-in's whole name
    starts a line."""
    from twin.scenario import builtin_names

    res = subprocess.run([sys.executable, "-m", "twin.cli", "scenarios"], capture_output=True,
                         text=True, check=True)
    lines = res.stdout.splitlines()
    assert lines[0].split("\t")[0] == "name"
    assert [ln.split("\t")[0] for ln in lines[1:]] == builtin_names()
    rows = json.loads(subprocess.run([sys.executable, "-m", "twin.cli", "scenarios", "--json"],
                                     capture_output=True, text=True, check=True).stdout)
    assert [r["name"] for r in rows] == builtin_names()
    zoom = next(r for r in rows if r["name"] == "nimh-zoom")
    assert zoom["projections"] == 3201 and zoom["pixels"] == [1024, 1024]
    assert zoom["voxel_size_um"] == pytest.approx(3.62, abs=0.01)


def test_bracketed_text_of_an_error_is_printed():
    """Rich markup would swallow "[source]"; errors are printed as written."""
    res = runner.invoke(app, ["simulate", str(DATA / "small_parts.toml"), "--out", "unused",
                              "--set", "source.kvpp=80"])
    assert res.exit_code == 2
    assert "unknown key in [source] 'kvpp'" in _text(res)


def test_numpy_numbers_in_messages_are_plain(tmp_path):
    res = runner.invoke(app, ["phantom", "nimh_aaa", "--voxel-um", "-5", "--out", str(tmp_path / "t.h5")])
    assert res.exit_code == 2
    assert "got -5.0" in _text(res) and "np.float64" not in res.output


@pytest.mark.parametrize("table,pattern", [
    ({"algorithm": "art"}, "recon.algorithm"),
    ({"filter": "bogus"}, "recon.filter: unknown ramp filter 'bogus'; Allowed"),
    ({"cutoff": 2}, r"recon.cutoff must be a number in \(0, 1\]"),
    ({"cutoff": "0.5"}, "recon.cutoff"),
    ({"center": "middle"}, "recon.center must be 'geometry', 'auto' or an offset"),
    ({"truncation": "pad"}, "unknown recon.truncation 'pad'"),
    ({"n_iter": 0}, "recon.n_iter must be an integer >= 1"),
    ({"n_iter": 2.5}, "recon.n_iter"),
    ({"ring_removal": "yes"}, "recon.ring_removal"),
    ({"tiff": 1}, "recon.tiff must be true or false"),
    ({"beam_hardening": 3}, "recon.beam_hardening must be a reference material name"),
    ({"denoise": {"method": "tv"}}, "unknown recon.denoise method 'tv'"),
])
def test_recon_values_are_checked(table, pattern):
    with pytest.raises(XrmInputError, match=pattern):
        recon_options(table)


def test_recon_values_that_are_allowed():
    for table in ({}, {"algorithm": "sirt", "n_iter": 20}, {"filter": "Hann", "cutoff": 0.8},
                  {"center": 1.5}, {"center": "auto"}, {"truncation": "none"}, {"truncation": "chord"},
                  {"denoise": "nlm"}, {"denoise": {"method": "nlm", "kernel_size": 17}},
                  {"denoise": "none"}, {"ring_removal": {"level": 5}}, {"beam_hardening": "SS304"},
                  {"filtered_dtype": "float16"}):
        assert recon_options(table)["algorithm"] in ("fdk", "sirt")


def test_spectrum_summary_goes_to_stdout():
    res = subprocess.run([sys.executable, "-m", "twin.cli", "spectrum", "--kvp", "100", "--filter", "LE6"],
                         capture_output=True, text=True, check=True)
    assert "100 kV, 10 W, filter LE6: mean energy" in res.stdout


def test_measure_report_carries_the_scan_keys_of_its_recon_file(tmp_path):
    """`reconstruct` records the scenario's name, tube voltage, magnification and mean energy in
    recon.h5; `measure` on that file reports them under the contract's keys."""
    out = tmp_path / "r"
    for args in (["simulate", str(DATA / "small_parts.toml"), "--out", str(out), "--arch", "cpu",
                  "--set", "geometry.projections=30"],
                 ["reconstruct", str(out), "--out", str(out), "--arch", "cpu"],
                 ["measure", str(out / "recon.h5"), "--truth", str(out / "truth.h5"), "--out",
                  str(tmp_path / "m"), "--arch", "cpu", "--no-3d"]):
        res = runner.invoke(app, ["--quiet", *args])
        assert res.exit_code == 0, res.output
    r = json.loads((tmp_path / "m" / "report.json").read_text())
    from twin.spectrum import tube_spectrum
    from twin.filters import resolve_filter

    spectrum = tube_spectrum(80, 5).filtered(resolve_filter("LE3"))
    assert r["scenario"] == "small-parts"
    assert r["geometry"]["magnification"] == pytest.approx(2.5)
    assert r["geometry"]["voxel_size_um"] == pytest.approx(24.0)
    assert r["source"]["kvp"] == 80.0
    assert r["source"]["mean_energy_kev"] == pytest.approx(spectrum.mean_energy_kev, rel=1e-6)
    assert r["timing_s"]["measure"] > 0 and r["metrology"] and r["metrology_truth"]
    with h5py.File(out / "recon.h5") as f:
        assert f.attrs["source_file"] == "projections.h5"  # relative: the same bytes in any folder


def test_plan_refuses_a_scan_that_cannot_fit(tmp_path):
    res = runner.invoke(app, ["plan", str(DATA / "small_parts.toml"), "--out", str(tmp_path / "p.pkl"),
                              "--set", "detector.pixels=[200000, 200000]"])
    assert res.exit_code == 2, res.output
    assert "200000 x 200000 detector pixels" in _text(res) and "this machine allows" in _text(res)
    assert not (tmp_path / "p.pkl").exists()
