"""Scan-time model: the paper's pouch scan takes over 13 hours (3201 views x 15 s)."""

import pytest

from twin.scan_time import scan_time_s, scenario_scan_time_s
from twin.scenario import load_scenario


def test_pouch_scan_is_over_13_hours():
    spec = load_scenario("pouch-highres")
    hours = scenario_scan_time_s(spec.geometry, spec.detector) / 3600
    assert hours > 3201 * 15 / 3600 > 13.0
    assert hours < 16.0  # exposure dominates: 15 s x 3201 = 13.3 h, overheads < 2.5 h


def test_scan_time_is_linear_in_views_and_exposure():
    base = scan_time_s(views=100, exposure_s=1.0, readout_s=0.0, flats=0, darks=0, stage_move_s=0, setup_s=0)
    assert base == pytest.approx(100.0)
    assert scan_time_s(views=200, exposure_s=2.0, readout_s=0.0, flats=0, darks=0, stage_move_s=0,
                       setup_s=0) == pytest.approx(4 * base)
