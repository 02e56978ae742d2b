"""Dataset spec: validation (bad input names the key), pure per-sample draws, TOML export."""

from __future__ import annotations

import tomllib

import numpy as np
import pytest

from twin.datasets.spec import draw_sample, load_dataset_spec, to_toml, validate_dataset_spec
from twin.errors import XrmInputError
from twin.scenario import validate

from tests.test_dataset_helpers import SPEC, tiny_dict, tiny_spec


def _params(**p):
    d = tiny_dict()
    d["parameters"] = p
    return d


@pytest.mark.parametrize("params, words", [
    ({"source": {"kvp": {"uniform": [100, 60]}}}, ["parameters.source.kvp", "min 100 > max 60"]),
    ({"source": {"power_w": {"loguniform": [0, 3]}}}, ["parameters.source.power_w", "> 0"]),
    ({"geometry": {"projections": {"integers": [20, 10]}}}, ["parameters.geometry.projections", "min 20 > max 10"]),
    ({"source": {"kvpp": {"uniform": [60, 90]}}}, ["source.kvpp", "did you mean", "source.kvp"]),
    ({"phantom": {"parts": {"anod": {"radius_mm": {"uniform": [0.1, 0.2]}}}}}, ["'anod'", "anode"]),
    ({"phantom": {"parts": {"anode": {"radius": {"uniform": [0.1, 0.2]}}}}}, ["'radius'", "radius_mm"]),
    ({"detector": {"exposure_s": {"normal": [1.0, 0.1], "min": 5.0, "max": 6.0}}},
     ["parameters.detector.exposure_s", "no probability"]),
    ({"detector": {"exposure_s": {"normal": [1.0, 0.1], "min": 2.0, "max": 1.0}}}, ["min 2 > max 1"]),
    ({"source": {"kvp": {"uniform": [60, 90], "choices": [1]}}}, ["parameters.source.kvp", "exactly one"]),
    ({"source": {"kvp": {"uniform": [60, 90], "sd": 3}}}, ["parameters.source.kvp", "'sd'"]),
    ({"source": {"filter": {"choices": []}}}, ["parameters.source.filter", "non-empty"]),
    ({"geometry": {"projections": {"uniform": [10, 12]}}}, ["geometry.projections", "integer"]),
])
def test_impossible_or_unknown_parameters_name_the_key(params, words):
    with pytest.raises(XrmInputError) as e:
        validate_dataset_spec(_params(**params), origin="spec.toml")
    for w in words:
        assert w in str(e.value), (w, str(e.value))


@pytest.mark.parametrize("change, words", [
    ({"cuont": 3}, ["'cuont'", "count"]),
    ({"count": 0}, ["count"]),
    ({"split": {"train": 0.9, "val": 0.2}}, ["split", "add up to 1"]),
    ({"split": {"train": 1.0, "dev": 0.0}}, ["'dev'"]),
    ({"store": {"recon": "yes"}}, ["store.recon"]),
    ({"store": {"pacthes": {"size": 8}}}, ["'pacthes'", "patches"]),
    ({"store": {"patches": {"size": [8, 0, 8]}}}, ["store.patches.size"]),
    ({"voids": {"host": "cathod"}}, ["voids.host", "cathode"]),
    ({"arch": "tpu"}, ["arch", "'tpu'"]),
])
def test_bad_spec_keys(change, words):
    with pytest.raises(XrmInputError) as e:
        validate_dataset_spec(tiny_dict(**change), origin="spec.toml")
    for w in words:
        assert w in str(e.value), (w, str(e.value))


def test_base_and_inline_are_exclusive():
    with pytest.raises(XrmInputError, match="exactly one of base"):
        validate_dataset_spec(tiny_dict(base="coin-lowres"), origin="s")


def test_draws_are_pure_and_count_does_not_change_samples():
    a = tiny_spec()
    b = tiny_spec(count=50)
    assert a.spec_hash == b.spec_hash
    for i in range(4):
        da, db = draw_sample(a, i), draw_sample(b, i)
        assert da.params == db.params and da.scenario == db.scenario and da.split == db.split
    # another seed: other samples, another hash
    c = tiny_spec(seed=12)
    assert c.spec_hash != a.spec_hash
    assert draw_sample(c, 0).params != draw_sample(a, 0).params
    # distributions are honoured
    draws = [draw_sample(b, i) for i in range(50)]
    kvp = np.array([d.params["source.kvp"] for d in draws])
    assert kvp.min() >= 60 and kvp.max() <= 100 and kvp.std() > 5
    exp = np.array([d.params["detector.exposure_s"] for d in draws])
    assert exp.min() >= 0.03 and exp.max() <= 0.05
    assert {d.params["source.filter"] for d in draws} == {"LE1", "LE2"}
    assert {d.split for d in draws} == {"train", "val", "test"}
    nvoid = [d.params["voids.count"] for d in draws]
    assert min(nvoid) >= 1 and max(nvoid) <= 3


def test_voids_lie_inside_the_host_and_apart():
    spec = tiny_spec(count=20)
    for i in range(20):
        d = draw_sample(spec, i)
        anode = next(p for p in d.scenario["phantom"]["parts"] if p["name"] == "anode")
        voids = [p for p in d.scenario["phantom"]["parts"] if p["name"].startswith("void")]
        for v in voids:
            c, r = np.array(v["center_mm"]), v["radius_mm"]
            assert np.hypot(c[0], c[1]) + r <= anode["radius_mm"] + 1e-12
            assert abs(c[2] - anode["center_mm"][2]) + r <= anode["height_mm"] / 2 + 1e-12
        for j, v in enumerate(voids):
            for w in voids[j + 1:]:
                dist = np.linalg.norm(np.subtract(v["center_mm"], w["center_mm"]))
                assert dist >= v["radius_mm"] + w["radius_mm"]


def test_sample_scenario_exports_as_toml_round_trip():
    d = draw_sample(tiny_spec(), 1)
    spec = validate(d.scenario)
    text = to_toml(spec.to_toml_dict())
    again = validate(tomllib.loads(text))
    assert again.to_json() == spec.to_json()


def test_set_overrides_any_key_and_example_spec_loads(tmp_path):
    s = load_dataset_spec("example", ["count=3", "parameters.source.kvp={uniform=[70,75]}"])
    assert s.count == 3
    assert all(70 <= draw_sample(s, i).params["source.kvp"] <= 75 for i in range(3))
    with pytest.raises(XrmInputError, match="'cont'"):
        load_dataset_spec("example", ["cont=3"])
    assert SPEC["count"] == 4  # the helper is not mutated


def test_cli_function_registers_on_a_typer_app(tmp_path):
    """What twin/cli.py does: app.command()(dataset); bad input exits 2 with the message."""
    import typer
    from typer.testing import CliRunner

    from twin.datasets.cli import dataset

    app = typer.Typer()
    app.command()(dataset)

    @app.command()
    def other() -> None:  # a second command, so `dataset` is a sub-command as in xrm-twin
        pass

    r = CliRunner().invoke(app, ["dataset", "--help"])
    assert r.exit_code == 0 and "--workers" in r.output and "--scheduler" in r.output
    r = CliRunner().invoke(app, ["dataset", str(tmp_path / "nope.toml"), "--out", str(tmp_path / "o")])
    assert r.exit_code == 2 and "does not exist" in " ".join(r.output.split())
    r = CliRunner().invoke(app, ["dataset", "example", "--out", str(tmp_path / "o"), "--set", "count=-1"])
    assert r.exit_code == 2 and "count" in r.output
    r = CliRunner().invoke(app, ["dataset", "example", "--out", str(tmp_path / "o"), "--workers", "2",
                                 "--scheduler", "tcp://127.0.0.1:1"])
    assert r.exit_code == 2 and "either --workers or --scheduler" in " ".join(r.output.split())


@pytest.mark.parametrize("source,pattern", [
    ({"kvp": {"uniform": [60, 200]}}, "parameters.source.kvp can be 200"),
    ({"filter": {"choices": ["LE2", "LE9"]}}, "parameters.source.filter can be 'LE9'"),
])
def test_a_parameter_limit_the_instrument_refuses_is_found_when_the_spec_loads(source, pattern):
    """Not by the samples that happen to draw it after the run has started."""
    with pytest.raises(XrmInputError, match=pattern):
        tiny_spec(parameters={"source": source})


def test_a_misspelt_distribution_is_named_as_one():
    with pytest.raises(XrmInputError, match=r"parameters.source.kvp: unknown distribution 'unifrm'; "
                                            r"did you mean 'uniform'"):
        tiny_spec(parameters={"source": {"kvp": {"unifrm": [60, 90]}}})
