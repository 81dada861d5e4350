"""FID and KID from feature matrices: pure numpy functions, no scipy.

* Frechet distance between Gaussians fitted to two feature sets (Heusel et al. 2017):
  ||mu1 - mu2||^2 + tr(S1) + tr(S2) - 2 tr((S1 S2)^(1/2)).
  The trace of the square root is computed without a general matrix square root:
  (S1 S2) is similar to A = S1^(1/2) S2 S1^(1/2), which is symmetric positive semi-definite,
  so tr((S1 S2)^(1/2)) = sum_i sqrt(lambda_i(A)), with S1^(1/2) from an eigendecomposition.
* KID (Binkowski et al. 2018): the unbiased estimate of the squared MMD with the polynomial
  kernel k(x, y) = (x.y / d + 1)^3, averaged over random subsets.
"""

from __future__ import annotations

import numpy as np


def _as_features(x) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"features must be a 2-D array [N, D], got shape {x.shape}")
    return x


def feature_stats(features) -> tuple[np.ndarray, np.ndarray]:
    """Mean and (unbiased) covariance of a [N, D] feature matrix."""
    f = _as_features(features)
    if f.shape[0] < 2:
        raise ValueError("need at least 2 feature vectors for a covariance")
    return f.mean(axis=0), np.cov(f, rowvar=False)


def sqrtm_psd(a: np.ndarray) -> np.ndarray:
    """Square root of a symmetric positive semi-definite matrix (negative eigenvalues clipped to 0)."""
    a = (a + a.T) / 2.0
    w, v = np.linalg.eigh(a)
    return (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T


def trace_sqrt_product(s1: np.ndarray, s2: np.ndarray) -> float:
    """tr((s1 s2)^(1/2)) for symmetric PSD s1, s2, via the symmetric product s1^(1/2) s2 s1^(1/2)."""
    r = sqrtm_psd(s1)
    a = r @ s2 @ r
    w = np.linalg.eigvalsh((a + a.T) / 2.0)
    return float(np.sqrt(np.clip(w, 0.0, None)).sum())


def frechet_distance(mu1, sigma1, mu2, sigma2) -> float:
    """Frechet distance between N(mu1, sigma1) and N(mu2, sigma2)."""
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    sigma1, sigma2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
    diff = mu1 - mu2
    value = diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * trace_sqrt_product(sigma1, sigma2)
    return float(max(value, 0.0))


def fid_from_features(features1, features2) -> float:
    """FID between two feature matrices [N1, D] and [N2, D]."""
    m1, s1 = feature_stats(features1)
    m2, s2 = feature_stats(features2)
    return frechet_distance(m1, s1, m2, s2)


def polynomial_kernel(x: np.ndarray, y: np.ndarray, degree: int = 3, gamma: float | None = None, coef0: float = 1.0) -> np.ndarray:
    gamma = 1.0 / x.shape[1] if gamma is None else gamma
    return (gamma * (x @ y.T) + coef0) ** degree


def mmd2_unbiased(x, y, degree: int = 3) -> float:
    """Unbiased squared MMD between samples x [m, D] and y [n, D] with the polynomial kernel."""
    x, y = _as_features(x), _as_features(y)
    m, n = x.shape[0], y.shape[0]
    if m < 2 or n < 2:
        raise ValueError("need at least 2 samples on each side for the unbiased MMD")
    kxx = polynomial_kernel(x, x, degree)
    kyy = polynomial_kernel(y, y, degree)
    kxy = polynomial_kernel(x, y, degree)
    sxx = (kxx.sum() - np.trace(kxx)) / (m * (m - 1))
    syy = (kyy.sum() - np.trace(kyy)) / (n * (n - 1))
    return float(sxx + syy - 2.0 * kxy.mean())


def kid_from_features(features1, features2, num_subsets: int = 50, subset_size: int = 1000, seed: int = 0) -> tuple[float, float]:
    """KID: mean and standard deviation of the unbiased MMD^2 over random subsets.

    The subset size is capped at the smaller sample; with one subset covering both sets fully
    the estimate is exact (std 0).
    """
    x, y = _as_features(features1), _as_features(features2)
    size = int(min(subset_size, x.shape[0], y.shape[0]))
    if size == x.shape[0] == y.shape[0]:
        return mmd2_unbiased(x, y), 0.0
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(num_subsets):
        ix = rng.choice(x.shape[0], size, replace=False)
        iy = rng.choice(y.shape[0], size, replace=False)
        values.append(mmd2_unbiased(x[ix], y[iy]))
    values = np.asarray(values)
    return float(values.mean()), float(values.std())
