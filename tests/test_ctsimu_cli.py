"""``xrm-twin ctsimu export|run`` through the Typer sub-app."""

from __future__ import annotations

import json

import numpy as np
from typer.testing import CliRunner

from twin.ctsimu.cli import ctsimu_app

TOML = """
name = "cli-rt"
seed = 1
[source]
monochromatic_kev = 40
[geometry]
source_object_mm = 50.0
object_detector_mm = 50.0
objective = "flat-panel"
projections = 2
[detector]
pixels = [16, 12]
pixel_um = 200.0
ideal = true
flats = 1
darks = 1
[phantom]
kind = "parts"
[[phantom.parts]]
shape = "cylinder"
center_mm = [0.0, 0.0, 0.0]
radius_mm = 0.5
height_mm = 1.5
material = "Al"
"""


def test_export_then_run(tmp_path):
    (tmp_path / "s.toml").write_text(TOML)
    runner = CliRunner()
    r = runner.invoke(ctsimu_app, ["export", str(tmp_path / "s.toml"), "--out", str(tmp_path / "ct" / "s.json")])
    assert r.exit_code == 0, r.output
    data = json.loads((tmp_path / "ct" / "s.json").read_text())
    assert data["file"]["file_type"] == "CTSimU Scenario"
    assert data["source"]["spectrum"]["monochromatic"] is True
    assert len(data["samples"]) == 1 and (tmp_path / "ct" / data["samples"][0]["file"]["value"]).is_file()
    r = runner.invoke(ctsimu_app, ["run", str(tmp_path / "ct" / "s.json"), "--out", str(tmp_path / "out"),
                                   "--supersample", "1", "--arch", "cpu"])
    assert r.exit_code == 0, r.output
    meta = json.loads((tmp_path / "out" / "cli-rt_metadata.json").read_text())
    assert meta["output"]["projections"]["number"] == 2
    assert meta["output"]["projections"]["datatype"] == "float32"  # no bit depth for an ideal detector
    import tifffile

    img = tifffile.imread(tmp_path / "out" / "cli-rt_0000.tif")
    flat = tifffile.imread(tmp_path / "out" / "cli-rt_flat_0000.tif")
    assert img.shape == (12, 16) and img.dtype == np.float32
    assert img.min() < 0.9 * flat.max()  # the cylinder attenuates
    # every file is written under a temporary name and renamed: none is left behind
    import trimesh

    left = [p.name for p in tmp_path.rglob("*") if p.name.endswith(".part")]
    assert left == [], left
    mesh = trimesh.load(tmp_path / "ct" / data["samples"][0]["file"]["value"])  # the STL, as STL
    assert mesh.is_watertight and abs(mesh.volume - np.pi * 0.5**2 * 1.5) < 0.02 * np.pi * 0.5**2 * 1.5



def test_a_second_run_into_the_same_folder_is_refused_and_force_clears_stale_frames(tmp_path):
    """A rerun must not leave an earlier run's extra TIFFs beside a metadata file that no longer
    counts them: refused without --force (nothing touched), replaced with it (other files kept)."""
    (tmp_path / "s.toml").write_text(TOML)
    runner = CliRunner()
    scen = tmp_path / "ct" / "s.json"
    assert runner.invoke(ctsimu_app, ["export", str(tmp_path / "s.toml"), "--out", str(scen)]).exit_code == 0
    out = tmp_path / "out"
    args = ["run", str(scen), "--out", str(out), "--supersample", "1", "--arch", "cpu"]
    assert runner.invoke(ctsimu_app, args).exit_code == 0
    stale = out / "cli-rt_0007.tif"  # as if an earlier run had had 8 views
    stale.write_bytes(b"old frame")
    (out / "my_notes.txt").write_text("keep me")
    before = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    r = runner.invoke(ctsimu_app, args)
    assert r.exit_code == 2, r.output
    assert "earlier run" in r.output and "--force" in r.output
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == before
    r = runner.invoke(ctsimu_app, args + ["--force"])
    assert r.exit_code == 0, r.output
    assert not stale.exists() and (out / "my_notes.txt").read_text() == "keep me"
    frames = sorted(p.name for p in out.glob("cli-rt_[0-9]*.tif"))
    assert frames == ["cli-rt_0000.tif", "cli-rt_0001.tif"]

def test_run_refuses_unsupported_with_exit_code_2(tmp_path):
    (tmp_path / "s.toml").write_text(TOML)
    runner = CliRunner()
    runner.invoke(ctsimu_app, ["export", str(tmp_path / "s.toml"), "--out", str(tmp_path / "s.json")])
    data = json.loads((tmp_path / "s.json").read_text())
    data["detector"]["bad_pixel_map"] = {"file": {"value": "bad.raw"}}
    (tmp_path / "s.json").write_text(json.dumps(data))
    r = runner.invoke(ctsimu_app, ["run", str(tmp_path / "s.json"), "--out", str(tmp_path / "o")])
    assert r.exit_code == 2
    assert "detector.bad_pixel_map" in r.output
    r = runner.invoke(ctsimu_app, ["run", str(tmp_path / "s.json"), "--out", str(tmp_path / "o"),
                                   "--approximate", "--supersample", "1", "--arch", "cpu"])
    assert r.exit_code == 0, r.output
    assert "bad_pixel_map" in r.output  # the approximation is reported


def test_a_failure_is_exit_1_with_one_line_not_a_traceback(tmp_path, monkeypatch):
    """The exit codes of the contract: 2 bad input (a missing scenario), 1 any other failure."""
    runner = CliRunner()
    r = runner.invoke(ctsimu_app, ["run", str(tmp_path / "missing.json"), "--out", str(tmp_path / "o")])
    assert r.exit_code == 2 and "missing.json" in r.output
    (tmp_path / "s.toml").write_text(TOML)
    runner.invoke(ctsimu_app, ["export", str(tmp_path / "s.toml"), "--out", str(tmp_path / "s.json")])

    def broken(*args, **kwargs):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr("twin.ctsimu.run.run_to", broken)
    r = runner.invoke(ctsimu_app, ["run", str(tmp_path / "s.json"), "--out", str(tmp_path / "o"),
                                   "--arch", "cpu"])
    assert r.exit_code == 1
    assert "failed: RuntimeError: disk on fire" in r.output and "Traceback" not in r.output
