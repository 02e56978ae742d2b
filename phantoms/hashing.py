"""Counter-based random numbers: deterministic functions of (seed, stream, integer keys).

Microstructure is generated from *positions*, not from a sequential generator, so that any
volume of interest sees the same particles, struts and cracks whatever else was asked for
before. :func:`uniform` hashes the seed, a stream number (one per kind of draw) and integer
keys (e.g. lattice cell indices) with the SplitMix64 finaliser and returns floats in [0, 1).
"""

from __future__ import annotations

import numpy as np

__all__ = ["hash_u64", "uniform", "normal", "STREAMS"]

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)

#: stream numbers, one per kind of draw (keeps independent draws independent)
STREAMS = {name: i + 1 for i, name in enumerate((
    "foam_jitter", "foam_diameter", "foam_sheet", "foam_rotation", "particle", "void",
    "fibre", "crack", "delamination", "coin", "pouch", "nimh", "cathode_particle",
    "graphite_particle", "gf_fibre_coin", "gf_fibre_pouch", "crack_pouch"))}


def _mix(x: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        x = (x ^ (x >> np.uint64(30))) * _M1
        x = (x ^ (x >> np.uint64(27))) * _M2
        return x ^ (x >> np.uint64(31))


def _as_u64(a) -> np.ndarray:
    return np.asarray(a, dtype=np.int64).view(np.uint64)


def hash_u64(seed: int, stream: int, *keys) -> np.ndarray:
    """64-bit hash of ``(seed, stream, *keys)``; keys broadcast against each other.

    Parameters
    ----------
    seed, stream : int
    *keys : int or array of int
        Broadcastable integer arrays (e.g. lattice indices i, j, k and a draw index).

    Returns
    -------
    ndarray of uint64, the broadcast shape of ``keys``.
    """
    arrays = np.broadcast_arrays(*[np.asarray(k, dtype=np.int64) for k in keys]) if keys else [
        np.zeros((), np.int64)]
    with np.errstate(over="ignore"):
        h = _mix(_as_u64(np.int64(seed)) * _GOLDEN + _as_u64(np.int64(stream)))
        h = np.broadcast_to(h, arrays[0].shape).copy()
        for k in arrays:
            h = _mix(h ^ (_as_u64(k) + _GOLDEN + (h << np.uint64(6)) + (h >> np.uint64(2))))
    return h


def uniform(seed: int, stream: int, *keys) -> np.ndarray:
    """Uniform floats in [0, 1) (float64, 53 random bits), one per broadcast key."""
    return (hash_u64(seed, stream, *keys) >> np.uint64(11)).astype(np.float64) * (2.0 ** -53)


def normal(seed: int, stream: int, *keys) -> np.ndarray:
    """Standard normal floats (Box-Muller on two hashed uniforms), one per broadcast key."""
    k = [np.asarray(a, dtype=np.int64) for a in keys]
    u1 = uniform(seed, stream, *k, 0)
    u2 = uniform(seed, stream, *k, 1)
    return np.sqrt(-2.0 * np.log1p(-u1)) * np.cos(2.0 * np.pi * u2)
