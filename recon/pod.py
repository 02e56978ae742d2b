"""Probability of detection, POD(a), after MIL-HDBK-1823A.

Two models (``shared/reference/metrology_detectability.md`` B2), one place each:

* **hit/miss**: a GLM ``POD(a) = F(b0 + b1 ln a)`` with ``F`` the logistic (logit link) or normal
  CDF (probit link), fitted by maximum likelihood (Newton-Raphson / Fisher scoring); optionally
  Firth's penalised likelihood ``l + 0.5 log det I`` (logit), finite for separated data.
  ``a50 = exp(-b0/b1)``, ``a90 = exp((F^-1(0.9) - b0)/b1)``. ``a90/95`` is the one-sided upper 95 %
  bound on ``a90``: by the profile likelihood ratio (default; the handbook's method) with
  ``2 (l_max - l_profile) = chi2_1(0.90) = 2.7055``, or by the delta method on ``ln a90``.
* **a-hat vs a**: ``ln a_hat = b0 + b1 ln a + e``, ``e ~ N(0, tau^2)``, decision threshold
  ``a_hat_th``. ``POD(a) = Phi((ln a - mu)/sigma)``, ``mu = (ln a_hat_th - b0)/b1``,
  ``sigma = tau/b1``; ``a50 = e^mu``, ``a90 = e^(mu + 1.2816 sigma)``; ``a90/95`` by the delta
  method on ``(b0, b1, tau)`` (OLS covariance, ``var(tau) = tau^2 / (2 (n - 2))``).

Sizes ``a`` are in the caller's unit (um by convention in reports: defect **diameter**).
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np
from scipy import optimize, stats
from scipy.special import expit, ndtr, ndtri

from twin.errors import XrmInputError

__all__ = ["fit_hit_miss", "pod_curve", "fit_ahat", "demonstration_29_of_29",
           "hit_miss_from_match", "ahat_from_match"]

_LINKS = ("logit", "probit")
_CHI2_1_90 = float(stats.chi2.ppf(0.90, 1))  # one-sided 95 % bound from a two-sided 90 % region
_Z95 = float(ndtri(0.95))


def _F(eta: np.ndarray, link: str) -> np.ndarray:
    return expit(eta) if link == "logit" else ndtr(eta)


def _Finv(p: float, link: str) -> float:
    return math.log(p / (1 - p)) if link == "logit" else float(ndtri(p))


def _loglik(beta: np.ndarray, x: np.ndarray, y: np.ndarray, link: str) -> float:
    p = np.clip(_F(beta[0] + beta[1] * x, link), 1e-300, 1 - 1e-16)
    return float(np.sum(y * np.log(p) + (1 - y) * np.log1p(-p)))


def _info(beta: np.ndarray, x: np.ndarray, link: str) -> np.ndarray:
    X = np.column_stack([np.ones_like(x), x])
    eta = X @ beta
    p = np.clip(_F(eta, link), 1e-12, 1 - 1e-12)
    dens = p * (1 - p) if link == "logit" else stats.norm.pdf(eta)
    return X.T @ (X * (dens ** 2 / (p * (1 - p)))[:, None])


def _objective(beta: np.ndarray, x: np.ndarray, y: np.ndarray, link: str, firth: bool) -> float:
    """Log-likelihood, plus Firth's penalty 0.5 log det I(beta) when asked."""
    ll = _loglik(beta, x, y, link)
    if firth:
        sign, logdet = np.linalg.slogdet(_info(beta, x, link))
        ll += 0.5 * logdet if sign > 0 else -np.inf
    return ll


def _fit_firth(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Firth (1993) bias-reduced logistic regression: finite even for separated data."""
    X = np.column_stack([np.ones_like(x), x])
    beta = np.array([-np.median(x) / max(np.std(x), 1e-6), 1.0 / max(np.std(x), 1e-6)])
    for _ in range(200):
        p = np.clip(expit(X @ beta), 1e-12, 1 - 1e-12)
        w = p * (1 - p)
        info = X.T @ (X * w[:, None])
        inv = np.linalg.inv(info)
        h = np.einsum("ij,jk,ik->i", X, inv, X) * w  # hat-matrix diagonal
        score = X.T @ (y - p + h * (0.5 - p))
        step = inv @ score
        f0, t = _objective(beta, x, y, "logit", True), 1.0
        while _objective(beta + t * step, x, y, "logit", True) < f0 - 1e-12 and t > 1e-6:
            t /= 2
        beta = beta + t * step
        if np.max(np.abs(t * step)) < 1e-10:
            break
    return beta, np.linalg.inv(_info(beta, x, "logit"))


def _fit_glm(x: np.ndarray, y: np.ndarray, link: str, beta0: np.ndarray | None = None
             ) -> tuple[np.ndarray, np.ndarray]:
    """MLE of (b0, b1) and the inverse Fisher information (covariance)."""
    X = np.column_stack([np.ones_like(x), x])
    beta = np.zeros(2) if beta0 is None else beta0.copy()
    if beta0 is None:  # start from a least-squares line on the empirical logits
        beta[1] = 1.0 / max(np.std(x), 1e-6)
        beta[0] = -beta[1] * np.median(x)
    for _ in range(100):
        eta = X @ beta
        p = np.clip(_F(eta, link), 1e-12, 1 - 1e-12)
        dens = p * (1 - p) if link == "logit" else stats.norm.pdf(eta)
        w = dens ** 2 / (p * (1 - p))
        score = X.T @ ((y - p) * dens / (p * (1 - p)))
        info = X.T @ (X * w[:, None])
        try:
            step = np.linalg.solve(info, score)
        except np.linalg.LinAlgError:
            raise XrmInputError("POD fit failed: the hit/miss data do not determine a curve "
                                "(all hits or all misses, or a single size)") from None
        # step halving keeps the likelihood increasing
        ll0, t = _loglik(beta, x, y, link), 1.0
        while _loglik(beta + t * step, x, y, link) < ll0 - 1e-12 and t > 1e-6:
            t /= 2
        beta = beta + t * step
        if np.max(np.abs(t * step)) < 1e-10:
            break
    eta = X @ beta
    p = np.clip(_F(eta, link), 1e-12, 1 - 1e-12)
    dens = p * (1 - p) if link == "logit" else stats.norm.pdf(eta)
    info = X.T @ (X * (dens ** 2 / (p * (1 - p)))[:, None])
    return beta, np.linalg.inv(info)


def fit_hit_miss(a: Sequence[float], hit: Sequence[bool], *, link: str = "logit",
                 bound: str = "lr", method: str = "mle") -> dict[str, Any]:
    """Fit a hit/miss POD(a) GLM on ``ln a`` and derive a50, a90, a90/95.

    Parameters
    ----------
    a : sequence of float, length n
        Defect sizes (> 0), e.g. diameters in um.
    hit : sequence of bool, length n
        Detected or not.
    link : {"logit", "probit"}
    bound : {"lr", "delta"}
        Method for the one-sided 95 % upper bound on a90.
    method : {"mle", "firth"}
        Maximum likelihood (MIL-HDBK-1823A), or Firth's bias-reduced (penalised) likelihood,
        logit only, which stays finite when hits and misses are perfectly separated (sharp
        thresholds, few sizes near them); its LR bounds use the penalised likelihood.

    Returns
    -------
    dict
        ``link``, ``beta`` (b0, b1), ``cov`` (2x2), ``loglik``, ``a50``, ``a90``, ``a90_95``,
        ``a90_ci90`` (two-sided 90 % interval whose upper end is ``a90_95``), ``bound``, ``n``,
        ``n_hits``, ``separated`` (True when hits and misses do not overlap: MLE unbounded).
    """
    if link not in _LINKS:
        raise XrmInputError(f"link must be one of {_LINKS}, got {link!r}")
    if bound not in ("lr", "delta"):
        raise XrmInputError(f"bound must be 'lr' or 'delta', got {bound!r}")
    a = np.asarray(a, float)
    y = np.asarray(hit, bool).astype(float)
    if a.shape != y.shape or a.ndim != 1:
        raise XrmInputError(f"a and hit must be 1-D of the same length, got {a.shape}, {y.shape}")
    if a.size < 4 or np.any(~np.isfinite(a)) or np.any(a <= 0):
        raise XrmInputError("POD needs at least 4 finite sizes a > 0")
    if y.min() == y.max():
        raise XrmInputError("POD hit/miss needs both hits and misses (got only "
                            f"{'hits' if y[0] else 'misses'})")
    if method not in ("mle", "firth"):
        raise XrmInputError(f"method must be 'mle' or 'firth', got {method!r}")
    if method == "firth" and link != "logit":
        raise XrmInputError("method='firth' is implemented for link='logit' only")
    firth = method == "firth"
    x = np.log(a)
    separated = bool(x[y == 1].min() > x[y == 0].max())
    if separated and not firth:
        raise XrmInputError("POD hit/miss data are perfectly separated (every miss smaller than "
                            "every hit): the GLM has no finite MLE; add sizes near the threshold "
                            "or use method='firth'")
    beta, cov = _fit_firth(x, y) if firth else _fit_glm(x, y, link)
    if beta[1] <= 0:
        raise XrmInputError(f"POD fit gives a decreasing curve (b1 = {beta[1]:.3g}); no a90")
    ll = _objective(beta, x, y, link, firth)
    q90 = _Finv(0.9, link)
    ln_a90 = (q90 - beta[0]) / beta[1]
    out = {"link": link, "beta": beta.tolist(), "cov": cov.tolist(), "loglik": ll,
           "a50": float(math.exp(-beta[0] / beta[1])), "a90": float(math.exp(ln_a90)),
           "n": int(a.size), "n_hits": int(y.sum()), "bound": bound, "separated": separated,
           "method": method}
    # delta method on ln a90 = (q90 - b0)/b1
    g = np.array([-1.0 / beta[1], -(q90 - beta[0]) / beta[1] ** 2])
    se = float(math.sqrt(max(g @ cov @ g, 0.0)))
    delta = (math.exp(ln_a90 - _Z95 * se), math.exp(ln_a90 + _Z95 * se))
    if bound == "delta":
        out["a90_ci90"] = list(delta)
        out["a90_95"] = delta[1]
        return out

    # profile likelihood in theta = ln a90: b0 = q90 - b1 * theta, maximise over b1
    def prof(theta: float) -> float:
        def nll(b1: float) -> float:
            return -_objective(np.array([q90 - b1 * theta, b1]), x, y, link, firth)
        res = optimize.minimize_scalar(nll, bounds=(1e-6, 50 * beta[1] + 50), method="bounded",
                                       options={"xatol": 1e-9})
        return -float(res.fun)

    def crit(theta: float) -> float:
        return 2.0 * (ll - prof(theta)) - _CHI2_1_90

    span = max(5 * se, 0.05)
    lo_t, hi_t = ln_a90 - span, ln_a90 + span
    for _ in range(30):
        if crit(hi_t) > 0:
            break
        hi_t += span
    for _ in range(30):
        if crit(lo_t) > 0:
            break
        lo_t -= span
    up = optimize.brentq(crit, ln_a90, hi_t, xtol=1e-8) if crit(hi_t) > 0 else float("inf")
    dn = optimize.brentq(crit, lo_t, ln_a90, xtol=1e-8) if crit(lo_t) > 0 else float("-inf")
    out["a90_ci90"] = [math.exp(dn) if np.isfinite(dn) else 0.0,
                       math.exp(up) if np.isfinite(up) else float("inf")]
    out["a90_95"] = out["a90_ci90"][1]
    out["a90_95_delta"] = delta[1]
    return out


def pod_curve(fit: dict[str, Any], a: Sequence[float] | np.ndarray) -> np.ndarray:
    """Evaluate a fitted POD (hit/miss or a-hat) at sizes ``a``."""
    a = np.asarray(a, float)
    if "beta" in fit and "link" in fit:
        b0, b1 = fit["beta"]
        return _F(b0 + b1 * np.log(a), fit["link"])
    return ndtr((np.log(a) - fit["mu"]) / fit["sigma"])


def fit_ahat(a: Sequence[float], ahat: Sequence[float], ahat_threshold: float) -> dict[str, Any]:
    """a-hat vs a model: ``ln a_hat = b0 + b1 ln a + e`` (OLS), POD from the decision threshold.

    Parameters
    ----------
    a : sequence of float (> 0)
        True sizes.
    ahat : sequence of float (> 0)
        Measured responses (e.g. measured size or signal).
    ahat_threshold : float (> 0)
        Decision threshold on a_hat.

    Returns
    -------
    dict
        ``beta`` (b0, b1), ``tau``, ``mu``, ``sigma``, ``a50``, ``a90``, ``a90_95`` (delta method),
        ``n``.
    """
    a = np.asarray(a, float)
    ah = np.asarray(ahat, float)
    if a.shape != ah.shape or a.ndim != 1 or a.size < 4:
        raise XrmInputError("a and ahat must be 1-D, same length, at least 4 points")
    if np.any(a <= 0) or np.any(ah <= 0) or ahat_threshold <= 0:
        raise XrmInputError("a, ahat and ahat_threshold must be > 0 (the model is on logs)")
    x, yv = np.log(a), np.log(ah)
    X = np.column_stack([np.ones_like(x), x])
    beta, *_ = np.linalg.lstsq(X, yv, rcond=None)
    n = a.size
    res = yv - X @ beta
    tau = float(math.sqrt(res @ res / (n - 2)))
    if beta[1] <= 0:
        raise XrmInputError(f"a-hat falls with a (slope {beta[1]:.3g}); no POD curve")
    cov_b = tau ** 2 * np.linalg.inv(X.T @ X)
    cov = np.zeros((3, 3))
    cov[:2, :2] = cov_b
    cov[2, 2] = tau ** 2 / (2.0 * (n - 2))
    lt = math.log(ahat_threshold)
    mu = (lt - beta[0]) / beta[1]
    sigma = tau / beta[1]
    z90 = float(ndtri(0.9))
    ln_a90 = mu + z90 * sigma

    def f(p):
        b0, b1, t = p
        return (lt - b0) / b1 + z90 * t / b1

    p0 = np.array([beta[0], beta[1], tau])
    eps = 1e-6 * np.maximum(np.abs(p0), 1.0)
    g = np.array([(f(p0 + e) - f(p0 - e)) / (2 * e[i]) for i, e in enumerate(np.diag(eps))])
    se = float(math.sqrt(max(g @ cov @ g, 0.0)))
    return {"beta": beta.tolist(), "tau": tau, "mu": mu, "sigma": sigma,
            "a50": math.exp(mu), "a90": math.exp(ln_a90),
            "a90_95": math.exp(ln_a90 + _Z95 * se), "n": int(n), "ahat_threshold": ahat_threshold}


def demonstration_29_of_29(n_hits: int, n_trials: int) -> dict[str, Any]:
    """The 29-of-29 demonstration: all hits in >= 29 trials shows POD >= 0.9 at 95 %.

    ``0.9^29 = 0.047 < 0.05``. Returns ``passed`` and the one-sided 95 % lower bound on POD
    (Clopper-Pearson).
    """
    if n_trials <= 0 or not (0 <= n_hits <= n_trials):
        raise XrmInputError(f"need 0 <= n_hits <= n_trials, n_trials > 0; got {n_hits}, {n_trials}")
    lower = float(stats.beta.ppf(0.05, n_hits, n_trials - n_hits + 1)) if n_hits > 0 else 0.0
    return {"passed": bool(n_hits == n_trials and n_trials >= 29), "pod_lower95": lower}


def hit_miss_from_match(truth: Sequence[dict], match: dict, *, types: Sequence[str] | None = None,
                        size_key: str = "size_um") -> tuple[np.ndarray, np.ndarray]:
    """Hit/miss data from :func:`recon.defects.match_defects`: (sizes, hit) per truth defect.

    Parameters
    ----------
    truth : sequence of dict
        The truth rows given to ``match_defects`` (same order).
    match : dict
        Its result.
    types : sequence of str, optional
        Keep only these truth types.
    size_key : str
        Row key holding the size ``a`` (default ``size_um``, a diameter).

    Returns
    -------
    a : ndarray of float, shape (n,)
    hit : ndarray of bool, shape (n,)
    """
    hit_idx = {m["truth_index"] for m in match.get("matched", [])}
    a, h = [], []
    for i, r in enumerate(truth):
        if types is not None and r.get("type") not in types:
            continue
        size = r.get(size_key)
        if size is None or not np.isfinite(float(size)) or float(size) <= 0:
            continue
        a.append(float(size))
        h.append(i in hit_idx)
    return np.asarray(a, float), np.asarray(h, bool)


def ahat_from_match(truth: Sequence[dict], detections: Sequence[dict], match: dict, *,
                    size_key: str = "size_um") -> tuple[np.ndarray, np.ndarray]:
    """(a, a_hat) pairs of matched defects: truth size and detected size (same key)."""
    a, ah = [], []
    for m in match.get("matched", []):
        t, d = truth[m["truth_index"]].get(size_key), detections[m["detection_index"]].get(size_key)
        if t and d and t > 0 and d > 0:
            a.append(float(t))
            ah.append(float(d))
    return np.asarray(a, float), np.asarray(ah, float)
