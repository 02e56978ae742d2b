"""The local grey level in one volume of memory (recon.local_level) and the bit-packed masks
of the crack search (recon.plane_filter._Masks)."""

import numpy as np
import pytest
from scipy import ndimage as ndi

import recon.local_level as ll
from recon.plane_filter import _Masks


def _whole_volume(v, m, sigma, fill):
    """The formula written out on whole volumes (two Gaussian-filtered float32 copies)."""
    w = ndi.gaussian_filter(m.astype(np.float32), sigma)
    s = ndi.gaussian_filter(np.where(m, v, 0).astype(np.float32), sigma)
    return np.where(w > 0.05, s / np.maximum(w, np.float32(1e-6)), np.float32(fill)).astype(np.float32)


@pytest.mark.parametrize("shape, sigma, block", [((70, 40, 50), 8.0, 5000),      # slabs < 2 halos
                                                 ((150, 48, 40), 3.0, 4000),
                                                 ((12, 30, 33), 5.0, 1 << 22),   # nz < radius
                                                 ((64, 64, 64), 2.5, 1 << 22)])
def test_equals_the_whole_volume_formula_bit_for_bit(monkeypatch, shape, sigma, block):
    monkeypatch.setattr(ll, "_BLOCK_VOXELS", block)
    rng = np.random.default_rng(3)
    v = rng.normal(1.0, 0.2, shape).astype(np.float32)
    m = ndi.gaussian_filter(rng.random(shape), 2.0) > 0.52  # blobs, with gaps wider than sigma
    want = _whole_volume(v, m, sigma, fill=0.7)
    got = ll.masked_gaussian_mean(v, m, sigma, fill=0.7)
    assert got.dtype == np.float32 and np.array_equal(got, want)
    assert np.any(got == np.float32(0.7)) or m.mean() > 0.3  # the far fill is exercised where it can be
    box = (slice(3, 11), slice(0, 17), slice(20, None))
    assert np.array_equal(ll.masked_gaussian_mean(v, m, sigma, fill=0.7, box=box), want[box])


@pytest.mark.parametrize("threads", ["1", "2", "3"])
def test_blocks_on_threads_equal_the_whole_volume_formula(monkeypatch, threads):
    """Above recon.slabs' size floor the blocks of each pass run on the host's threads."""
    from recon.slabs import MIN_PARALLEL_VOXELS

    monkeypatch.setenv("XRM_TWIN_THREADS", threads)
    monkeypatch.setattr(ll, "_BLOCK_VOXELS", 1 << 16)  # many blocks per pass
    shape = (130, 128, 128)
    assert np.prod(shape) >= MIN_PARALLEL_VOXELS
    rng = np.random.default_rng(4)
    v = rng.normal(1.0, 0.2, shape).astype(np.float32)
    m = ndi.gaussian_filter(rng.random(shape).astype(np.float32), 2.0) > 0.52
    assert np.array_equal(ll.masked_gaussian_mean(v, m, 4.0, fill=0.7), _whole_volume(v, m, 4.0, fill=0.7))


def test_a_uniform_phase_has_its_own_level_and_the_fill_far_away():
    v = np.full((40, 40, 80), 3.0, np.float32)
    m = np.zeros(v.shape, bool)
    m[:, :, :20] = True
    v[~m] = 100.0  # outside the mask: never averaged in
    lev = ll.masked_gaussian_mean(v, m, 2.0, fill=-1.0)
    assert np.allclose(lev[:, :, :20], 3.0, rtol=1e-6)
    assert np.all(lev[:, :, 40:] == np.float32(-1.0))  # 20 voxels = 10 sigma from the mask


def test_shape_mismatch_is_an_error():
    with pytest.raises(ValueError, match="same 3-D shape"):
        ll.masked_gaussian_mean(np.zeros((4, 4, 4), np.float32), np.zeros((4, 4, 5), bool), 1.0, fill=0)


def test_masks_keep_eight_volumes_in_one_byte_each():
    rng = np.random.default_rng(0)
    shape = (9, 10, 11)
    ms = {f"m{i}": rng.random(shape) > 0.5 for i in range(8)}
    store = _Masks(shape)
    for k, m in ms.items():
        store.put(k, m)
    assert store.bits.dtype == np.uint8 and store.bits.shape == shape
    for k, m in ms.items():
        assert np.array_equal(store.get(k), m)
    box = (slice(2, 5), slice(None), slice(7, 9))
    assert np.array_equal(store.get("m3", box), ms["m3"][box])
    store.put("m3", ~ms["m3"])  # replaced, the others untouched
    assert np.array_equal(store.get("m3"), ~ms["m3"]) and np.array_equal(store.get("m4"), ms["m4"])
    with pytest.raises(ValueError, match="8 masks"):
        store.put("ninth", ms["m0"])
