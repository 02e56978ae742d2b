"""projections.h5 is NXtomo that another tool reads (ESRF's nxtomo package, when installed)."""

import numpy as np
import pytest

from tests.twin_helpers import parts_scenario
from twin.nxtomo import read_nxtomo
from twin.simulate import simulate_to

PARTS = [{"shape": "sphere", "material": "Al", "radius_mm": 0.5, "subdivisions": 3}]


@pytest.fixture(scope="module")
def scan(tmp_path_factory):
    out = tmp_path_factory.mktemp("nx")
    spec = parts_scenario(PARTS, pixels=(24, 16), pixel_um=100.0, beam="cone", projections=10,
                          source_object_mm=20.0, object_detector_mm=30.0,
                          detector={"ideal": False, "exposure_s": 0.01, "flats": 3, "darks": 2})
    simulate_to(spec, out, arch="cpu", quiet=True)
    return out / "projections.h5"


def test_roundtrip_with_our_reader(scan):
    d = read_nxtomo(scan)
    assert d["projections"].shape == (10, 16, 24)
    assert d["flats"].shape == (3, 16, 24) and d["darks"].shape == (2, 16, 24)
    assert np.allclose(d["angles_deg"], np.arange(10) * 36.0)
    assert d["geometry"].voxel_size_um == pytest.approx(40.0)


def test_esrf_nxtomo_reads_it(scan):
    nxtomo = pytest.importorskip("nxtomo", reason="nxtomo not installed")
    t = nxtomo.NXtomo().load(str(scan), "entry")
    det = t.instrument.detector
    keys = np.array([int(k.value) for k in det.image_key_control])
    assert np.count_nonzero(keys == 0) == 10 and np.count_nonzero(keys == 1) == 3
    assert np.count_nonzero(keys == 2) == 2
    angles = np.asarray(t.sample.rotation_angle.magnitude)
    assert np.allclose(angles[keys == 0], np.arange(10) * 36.0)
    assert det.x_pixel_size.to("m").magnitude == pytest.approx(100e-6)
    assert det.distance.to("m").magnitude == pytest.approx(0.030)
    energy = t.instrument.beam.incident_energy
    assert 20 < energy.to("keV").magnitude < 80


def test_frames_are_read_by_kind_in_runs_when_kinds_interleave(scan, tmp_path):
    """Other tools interleave the kinds (flats before and after the projections, darks in the
    middle): each kind is read in runs from the file and equals indexing the whole stack."""
    import shutil

    import h5py

    path = tmp_path / "interleaved.h5"
    shutil.copy(scan, path)
    rng = np.random.default_rng(0)
    with h5py.File(path, "r+") as f:
        det = f["entry/instrument/detector"]
        n = det["data"].shape[0]
        key = np.zeros(n, np.uint8)
        key[[0, 4, 5, n - 1]] = 1  # flats in three runs
        key[[7, 9]] = 2  # darks apart
        det["image_key"][...] = key
        data = rng.integers(0, 60000, det["data"].shape).astype(det["data"].dtype)
        det["data"][...] = data
    d = read_nxtomo(path)
    np.testing.assert_array_equal(d["projections"], data[key == 0])
    np.testing.assert_array_equal(d["flats"], data[key == 1])
    np.testing.assert_array_equal(d["darks"], data[key == 2])
    assert d["projections"].shape[0] == n - 6
