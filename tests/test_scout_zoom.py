"""Scout-and-zoom (issue 6, must-show 5): the zoom VOI lands where asked within one scout voxel."""

import json
from pathlib import Path

import numpy as np
from typer.testing import CliRunner

from recon.io import read_volume
from twin.cli import app

DATA = Path(__file__).parent / "data"
BEAD_MM = np.array([0.45, -0.3, 0.2])


def test_auto_voi_centres_the_bead(tmp_path):
    res = CliRunner().invoke(app, ["--quiet", "run", str(DATA / "scout_zoom_parts.toml"), "--out",
                                   str(tmp_path / "sz"), "--arch", "cpu"])
    assert res.exit_code == 0, res.output
    report = json.loads((tmp_path / "sz" / "report.json").read_text())
    scout_voxel_mm = report["voi"]["scout_voxel_um"] / 1000
    chosen = np.array(report["voi"]["center_mm"])
    # the scout found the bead within one scout voxel
    assert np.linalg.norm(chosen - BEAD_MM) <= scout_voxel_mm
    # the bead sits where the zoom reconstruction puts it: its centroid in the zoom volume
    z = read_volume(tmp_path / "sz" / "zoom" / "recon.h5")
    vol, vs_mm = z["volume"], z["voxel_size_um"] / 1000
    assert vs_mm < scout_voxel_mm / 2  # the zoom is finer
    bright = vol > 0.5 * vol.max()
    zz, yy, xx = np.nonzero(bright)
    w = vol[bright]
    centroid = np.asarray(z["origin_mm"]) + vs_mm * np.array([np.average(xx, weights=w),
                                                               np.average(yy, weights=w),
                                                               np.average(zz, weights=w)])
    assert np.linalg.norm(centroid - BEAD_MM) <= scout_voxel_mm
    # and at the centre of the zoom volume within one scout voxel
    centre = np.asarray(z["origin_mm"]) + vs_mm * (np.array(vol.shape[::-1]) - 1) / 2
    assert np.linalg.norm(centre - chosen) <= scout_voxel_mm


def test_a_mistake_in_the_zoom_is_found_before_the_scout_runs(tmp_path):
    """A bad filter in [zoom] set = [...]: exit 2 naming it, and no output folder (it used to be
    found after the whole scout scan)."""
    text = (DATA / "scout_zoom_parts.toml").read_text()
    marker = 'set = ["geometry.source_object_mm=10",'
    assert marker in text
    bad = tmp_path / "bad.toml"
    bad.write_text(text.replace(marker, 'set = ["source.filter=\'HE9\'", "geometry.source_object_mm=10",', 1)
                   .replace('scenario = "', f'scenario = "{DATA}/'))
    res = CliRunner().invoke(app, ["run", str(bad), "--out", str(tmp_path / "sz"), "--arch", "cpu"])
    assert res.exit_code == 2, res.output
    assert "unknown filter (source.filter) 'HE9'" in " ".join(res.output.split())
    assert not (tmp_path / "sz").exists()
