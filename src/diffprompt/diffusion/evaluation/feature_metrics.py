"""FID, KID and improved precision/recall from feature matrices: pure numpy functions, no scipy.

* Frechet distance between Gaussians fitted to two feature sets (Heusel et al. 2017):
  ||mu1 - mu2||^2 + tr(S1) + tr(S2) - 2 tr((S1 S2)^(1/2)).
  The trace of the square root is computed without a general matrix square root:
  (S1 S2) is similar to A = S1^(1/2) S2 S1^(1/2), which is symmetric positive semi-definite,
  so tr((S1 S2)^(1/2)) = sum_i sqrt(lambda_i(A)), with S1^(1/2) from an eigendecomposition.
* KID (Binkowski et al. 2018): the unbiased estimate of the squared MMD with the polynomial
  kernel k(x, y) = (x.y / d + 1)^3, averaged over random subsets. The kernel's 1/d assumes features
  of order 1 per entry, as Inception's pool features are; ours are divided by the reference set's
  root-mean-square entry first, so KID reads on the paper's scale whatever the feature network.
* Improved precision and recall (Kynkaanniemi et al. 2019): each set is approximated by the union
  of balls around its points with radius the distance to the k-th nearest neighbour in the same
  set; precision is the share of generated points inside the real manifold, recall the share of
  real points inside the generated one.
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


def kid_from_features(features1, features2, num_subsets: int = 100, subset_size: int = 1000, seed: int = 0,
                      rescale: bool = True) -> tuple[float, float]:
    """KID between samples (`features1`) and the reference (`features2`): mean and standard deviation
    of the unbiased MMD^2 over random subsets.

    With `rescale`, both sets are divided by the reference's root-mean-square entry (see the module
    docstring). The subset size is capped at the smaller sample; with one subset covering both sets
    fully the estimate is exact (std 0).
    """
    x, y = _as_features(features1), _as_features(features2)
    if rescale:
        scale = np.sqrt(np.mean(y**2))
        x, y = x / scale, y / scale
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


def _squared_distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    d = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * (a @ b.T)
    return np.maximum(d, 0.0)


def knn_radii(x, k: int = 3, chunk: int = 1024) -> np.ndarray:
    """The distance from each point of x [N, D] to its k-th nearest neighbour in x (itself excluded)."""
    x = _as_features(x)
    if not 1 <= k < x.shape[0]:
        raise ValueError(f"k = {k} needs 1 <= k < the number of points ({x.shape[0]})")
    radii = np.empty(x.shape[0])
    for start in range(0, x.shape[0], chunk):
        d = _squared_distances(x[start:start + chunk], x)
        radii[start:start + chunk] = np.sqrt(np.partition(d, k, axis=1)[:, k])  # column 0 is the point itself
    return radii


def share_inside(points, centres, radii, chunk: int = 1024) -> float:
    """The share of `points` that lie in at least one ball (centre_j, radius_j)."""
    points, centres = _as_features(points), _as_features(centres)
    inside = 0
    for start in range(0, points.shape[0], chunk):
        d = np.sqrt(_squared_distances(points[start:start + chunk], centres))
        inside += int((d <= radii[None, :]).any(axis=1).sum())
    return inside / points.shape[0]


def precision_recall(real, generated, k: int = 3, real_radii: np.ndarray | None = None) -> tuple[float, float]:
    """Improved precision and recall of `generated` against `real` features (k-NN balls).

    `real_radii` (= `knn_radii(real, k)`) may be passed when one reference scores many sample sets.
    """
    real, generated = _as_features(real), _as_features(generated)
    precision = share_inside(generated, real, knn_radii(real, k) if real_radii is None else real_radii)
    recall = share_inside(real, generated, knn_radii(generated, k))
    return precision, recall
