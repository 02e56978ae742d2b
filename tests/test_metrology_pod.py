"""POD(a) (MIL-HDBK-1823A) on synthetic data drawn from known curves."""

import math

import numpy as np
import pytest
from scipy.special import expit, ndtr, ndtri

from recon import pod
from twin.errors import XrmInputError

B0, B1 = -12.0, 4.0  # a50 = e^3 um, logistic
TRUE_A90 = math.exp((math.log(9.0) - B0) / B1)


def _draw(seed, n=150, link="logit"):
    rng = np.random.default_rng(seed)
    a = np.exp(rng.uniform(math.log(5), math.log(60), n))
    eta = B0 + B1 * np.log(a)
    p = expit(eta) if link == "logit" else ndtr(eta)
    return a, rng.random(n) < p


def test_hit_miss_recovers_a90_within_ci():
    a, hit = _draw(0)
    f = pod.fit_hit_miss(a, hit)
    lo, hi = f["a90_ci90"]
    assert lo < TRUE_A90 < hi
    assert f["a90_95"] == hi and f["a90"] < f["a90_95"]
    assert f["a50"] < f["a90"]
    np.testing.assert_allclose(pod.pod_curve(f, [f["a50"], f["a90"]]), [0.5, 0.9], atol=1e-9)


def test_a90_95_coverage_lr_and_delta():
    n_rep = 60
    cov_lr = cov_delta = 0
    for seed in range(n_rep):
        a, hit = _draw(100 + seed)
        f = pod.fit_hit_miss(a, hit)
        cov_lr += f["a90_95"] >= TRUE_A90
        cov_delta += f["a90_95_delta"] >= TRUE_A90
    # nominal 95 %; with 60 replicates the binomial sd is 2.8 %: allow 3.5 sd
    assert cov_lr / n_rep >= 0.85
    assert cov_delta / n_rep >= 0.85


def test_probit_link():
    a, hit = _draw(7, n=300, link="probit")
    f = pod.fit_hit_miss(a, hit, link="probit", bound="delta")
    true_a90 = math.exp((float(ndtri(0.9)) - B0) / B1)
    lo, hi = f["a90_ci90"]
    assert lo < true_a90 < hi


def test_ahat_model():
    rng = np.random.default_rng(1)
    b0, b1, tau, th = 0.2, 0.9, 0.3, 15.0
    a = np.exp(rng.uniform(math.log(5), math.log(60), 200))
    ah = np.exp(b0 + b1 * np.log(a) + rng.normal(0, tau, a.size))
    f = pod.fit_ahat(a, ah, th)
    mu = (math.log(th) - b0) / b1
    sig = tau / b1
    assert abs(math.log(f["a50"]) - mu) < 0.1
    true_a90 = math.exp(mu + float(ndtri(0.9)) * sig)
    assert f["a90"] < f["a90_95"]
    assert true_a90 < f["a90_95"]
    assert abs(f["a90"] / true_a90 - 1) < 0.15


def test_29_of_29():
    assert 0.9 ** 29 < 0.05
    r = pod.demonstration_29_of_29(29, 29)
    assert r["passed"] and r["pod_lower95"] > 0.9
    assert not pod.demonstration_29_of_29(28, 29)["passed"]


def test_bad_data():
    a = np.array([1.0, 2.0, 3.0, 4.0, 5.0])
    with pytest.raises(XrmInputError, match="both hits and misses"):
        pod.fit_hit_miss(a, [True] * 5)
    with pytest.raises(XrmInputError, match="separated"):
        pod.fit_hit_miss(a, [False, False, True, True, True])
    with pytest.raises(XrmInputError, match="link"):
        pod.fit_hit_miss(a, [False, True, False, True, True], link="cloglog")
    with pytest.raises(XrmInputError, match="> 0"):
        pod.fit_hit_miss(np.array([0.0, 1, 2, 3]), [False, True, False, True])


def test_firth_matches_mle_on_ordinary_data_and_handles_separation():
    a, hit = _draw(3, n=300)
    f_mle = pod.fit_hit_miss(a, hit)
    f_firth = pod.fit_hit_miss(a, hit, method="firth")
    assert abs(f_firth["a90"] / f_mle["a90"] - 1) < 0.05  # the penalty is O(1/n)
    assert f_firth["a90_ci90"][0] < TRUE_A90 < f_firth["a90_ci90"][1]
    sizes = np.array([5, 8, 10, 12, 15, 20, 25, 30, 40, 50], float)
    hits = sizes >= 15  # perfectly separated between 12 and 15
    f = pod.fit_hit_miss(sizes, hits, method="firth")
    assert f["separated"] and 10 < f["a50"] < 17 and f["a90"] < f["a90_95"]
    with pytest.raises(XrmInputError, match="firth"):
        pod.fit_hit_miss(sizes, hits)
