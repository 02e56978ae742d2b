"""Sweeps: --vary parsing, grids, outputs, Dask, --full, the CLI command functions."""

from __future__ import annotations

import csv
import json

import pytest

from twin.errors import XrmInputError
from twin.optimise.sweep import grid_rows, parse_vary, run_sweep


def test_parse_vary_lists_and_ranges():
    v = parse_vary(["source.kvp=40:100:20", "source.filter=LE1,LE2", "detector.exposure_s=0.5,2"])
    assert v == [("source.kvp", [40, 60, 80, 100]), ("source.filter", ["LE1", "LE2"]),
                 ("detector.exposure_s", [0.5, 2])]
    assert len(grid_rows(v)) == 16


@pytest.mark.parametrize("items, words", [
    (["source.kvpp=1,2"], "did you mean 'source.kvp'"),
    (["kvp=60"], "unknown parameter"),
    (["source.kvp"], "key=v1,v2"),
    (["source.kvp=100:40:10"], "stop >= start"),
    (["source.kvp=60", "source.kvp=80"], "twice"),
])
def test_parse_vary_errors(items, words):
    with pytest.raises(XrmInputError, match=words):
        parse_vary(items)


def test_sweep_values_outside_range_are_refused(tmp_path):
    with pytest.raises(XrmInputError, match="30-160 kV"):
        run_sweep("pouch-highres", ["source.kvp=60,200"], scheduler="none", out=tmp_path)


def test_fast_sweep_writes_table_and_figures(tmp_path):
    res = run_sweep("pouch-highres", ["source.kvp=40,60,80", "source.filter=LE1,LE4",
                                      "geometry.projections=800,1600"], scheduler="none", out=tmp_path)
    assert res["n_settings"] == 12
    with open(tmp_path / "sweep.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 12
    for col in ("source.kvp", "source.filter", "geometry.projections", "cnr", "d_prime", "pod",
                "auc", "scan_time_h", "hardening", "fov_mm"):  # docs/optimisation.md's outputs
        assert col in rows[0], col
    from scipy.stats import norm

    for r in rows:  # AUC of two equal-variance normals d' apart
        assert float(r["auc"]) == pytest.approx(norm.cdf(float(r["d_prime"]) / 2 ** 0.5), rel=1e-9)
        assert float(r["fov_mm"]) > 0 and float(r["hardening"]) >= 0
    data = json.loads((tmp_path / "sweep.json").read_text())
    assert data["task"] == "void:15um@cathode" and len(data["rows"]) == 12
    assert (tmp_path / "figures" / "dprime_vs_time.png").exists()
    assert len(list((tmp_path / "figures").glob("heatmap_*.png"))) == 3
    # more views: longer and better
    a = [r for r in res["rows"] if r["source.kvp"] == 60 and r["source.filter"] == "LE1"]
    a.sort(key=lambda r: r["geometry.projections"])
    assert a[1]["scan_time_h"] > a[0]["scan_time_h"] and a[1]["d_prime"] > a[0]["d_prime"]


def test_fast_sweep_on_dask_local_cluster_matches_in_process(tmp_path, caplog):
    import logging

    vary = ["source.kvp=50,70", "detector.exposure_s=1,3"]
    local = run_sweep("pouch-highres", vary, scheduler="none", plots=False)
    with caplog.at_level(logging.INFO):
        dask = run_sweep("pouch-highres", vary, scheduler="local", out=tmp_path, n_workers=2, plots=False)
    for a, b in zip(local["rows"], dask["rows"]):
        assert a["d_prime"] == pytest.approx(b["d_prime"], rel=1e-9)
    # Dask's own INFO chatter ("Closing Nanny ...") is held back unless xrm-twin is verbose
    chatter = [r.getMessage() for r in caplog.records
               if r.name.startswith("distributed") and r.levelno < logging.WARNING]
    assert chatter == [], chatter[:3]


def test_unreachable_scheduler_is_an_input_error():
    with pytest.raises(XrmInputError, match="cannot reach the Dask scheduler"):
        run_sweep("pouch-highres", ["source.kvp=60"], scheduler="tcp://127.0.0.1:9", plots=False)


@pytest.mark.slow
def test_full_sweep_simulates_and_resumes(tmp_path):
    vary = ["detector.exposure_s=1,4"]
    kw = dict(scheduler="none", out=tmp_path, pixels=64, max_views=60,
              overrides=["geometry.projections=60"])
    res = run_sweep("pouch-highres", vary, full=True, **kw)
    assert res["mode"] == "full" and res["n_settings"] == 2
    r1, r4 = res["rows"]
    assert r4["d_prime"] / r1["d_prime"] == pytest.approx(2.0, rel=0.15)
    for r in res["rows"]:
        assert r["d_prime_model"] == pytest.approx(r["d_prime"], rel=0.25)
    assert len(list((tmp_path / "rows").glob("*.json"))) == 2
    # resume: the rows are read back, not simulated again
    again = run_sweep("pouch-highres", vary, full=True, **kw)
    assert again["seconds"] < 0.5 * res["seconds"]
    assert again["rows"][0]["d_prime"] == r1["d_prime"]


def test_cli_commands(tmp_path):
    import typer
    from typer.testing import CliRunner

    from twin.optimise.cli import optimise, sweep

    app = typer.Typer()
    app.command("sweep")(sweep)
    app.command("optimise")(optimise)
    runner = CliRunner()
    r = runner.invoke(app, ["sweep", "pouch-highres", "--vary", "source.kvp=50,70", "--scheduler",
                            "none", "--out", str(tmp_path / "s")])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "s" / "sweep.csv").exists()
    r = runner.invoke(app, ["sweep", "pouch-highres", "--vary", "source.kvp=500", "--scheduler",
                            "none", "--out", str(tmp_path / "bad")])
    assert r.exit_code == 2
    r = runner.invoke(app, ["optimise", "pouch-highres", "--task", "void:15um@cathode", "--filters",
                            "LE2", "--objectives", "4x", "--binnings", "2", "--power-w", "6.5",
                            "--out", str(tmp_path / "o")])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "o" / "optimise.json").exists()
    r = runner.invoke(app, ["optimise", "pouch-highres", "--kvp", "10,100", "--out", str(tmp_path / "o2")])
    assert r.exit_code == 2


def test_a_row_file_of_other_settings_is_recomputed_not_reused(tmp_path, monkeypatch):
    """A rerun of `sweep --full` into a folder of another grid used to return the old rows under
    the new settings. A row file now answers only for the inputs it was computed from."""
    import json

    from twin.optimise import fullsim
    from twin.optimise.sweep import _full_row
    from twin.scenario import load_scenario

    calls = []

    def fake(base, row, task, *, pixels, max_views):
        calls.append(dict(row))
        return {"cnr": 1.0, "d_prime": float(row["detector.exposure_s"]), "d_prime_model": 1.0,
                "cnr_model": 1.0, "voxel_um": 1.0, "views_simulated": 10}

    monkeypatch.setattr(fullsim, "full_simulation", fake)
    spec = load_scenario("pouch-highres")
    spec_json = spec.to_json()
    path = str(tmp_path / "00000.json")
    first = _full_row(spec_json, spec.origin, {"detector.exposure_s": 1.0}, "void:15um@cathode", 64, 60, path)
    assert first["d_prime"] == 1.0 and len(calls) == 1
    same = _full_row(spec_json, spec.origin, {"detector.exposure_s": 1.0}, "void:15um@cathode", 64, 60, path)
    assert same == json.loads((tmp_path / "00000.json").read_text()) and len(calls) == 1  # reused
    other = _full_row(spec_json, spec.origin, {"detector.exposure_s": 2.0}, "void:15um@cathode", 64, 60, path)
    assert other["d_prime"] == 2.0 and len(calls) == 2  # another setting: recomputed
    _full_row(spec_json, spec.origin, {"detector.exposure_s": 2.0}, "void:15um@cathode", 96, 60, path)
    assert len(calls) == 3  # another size: recomputed


def test_workers_zero_runs_in_this_process(tmp_path):
    res = run_sweep("pouch-highres", ["source.kvp=60"], scheduler="local", n_workers=0, out=tmp_path)
    assert res["n_settings"] == 1
    with pytest.raises(XrmInputError, match="--workers must be >= 0"):
        run_sweep("pouch-highres", ["source.kvp=60"], scheduler="local", n_workers=-1, out=tmp_path)


@pytest.mark.parametrize("kw,option", [({"pixels": 0}, "--full-pixels"), ({"max_views": 2}, "--full-views")])
def test_full_sweep_sizes_are_checked_first(tmp_path, kw, option):
    with pytest.raises(XrmInputError, match=f"{option} must be an integer >= 8"):
        run_sweep("pouch-highres", ["source.kvp=60"], full=True, scheduler="none", out=tmp_path / "o", **kw)
    assert not (tmp_path / "o").exists()
