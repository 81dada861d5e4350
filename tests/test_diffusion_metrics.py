"""FID, KID and precision/recall against independent computations with known answers."""

import math

import numpy as np
import pytest

from diffprompt.diffusion.evaluation.feature_metrics import (
    fid_from_features,
    frechet_distance,
    kid_from_features,
    knn_radii,
    precision_recall,
)


def exact_sample(mean, cov, n, rng):
    """n points whose sample mean and unbiased sample covariance are exactly `mean` and `cov`."""
    z = rng.normal(size=(n, len(mean)))
    z -= z.mean(0)
    z = z @ np.linalg.inv(np.linalg.cholesky(np.cov(z, rowvar=False))).T  # whiten: cov(z) = I exactly
    return z @ np.linalg.cholesky(cov).T + mean


def test_fid_of_2d_gaussians_equals_the_closed_form():
    # For 2x2 SPD A, B: tr sqrt(AB) = sqrt(tr(AB) + 2 sqrt(det A det B)) (AB has eigenvalues l1, l2 > 0,
    # and (sqrt(l1) + sqrt(l2))^2 = l1 + l2 + 2 sqrt(l1 l2)).
    a = np.array([[2.0, 0.6], [0.6, 0.5]])
    b = np.array([[0.3, -0.2], [-0.2, 1.7]])  # does not commute with a
    m1, m2 = np.array([0.5, -1.0]), np.array([2.0, 0.25])
    tr_sqrt = math.sqrt(np.trace(a @ b) + 2 * math.sqrt(np.linalg.det(a) * np.linalg.det(b)))
    closed = float((m1 - m2) @ (m1 - m2) + np.trace(a) + np.trace(b) - 2 * tr_sqrt)
    assert frechet_distance(m1, a, m2, b) == pytest.approx(closed, rel=1e-10)
    rng = np.random.default_rng(0)
    x, y = exact_sample(m1, a, 50, rng), exact_sample(m2, b, 70, rng)
    assert fid_from_features(x, y) == pytest.approx(closed, rel=1e-9)


def test_fid_of_gaussians_sharing_eigenvectors_equals_the_closed_form():
    # Non-diagonal covariances Q D1 Q^T and Q D2 Q^T: FID = |m1 - m2|^2 + sum (sqrt(d1) - sqrt(d2))^2.
    rng = np.random.default_rng(1)
    q, _ = np.linalg.qr(rng.normal(size=(6, 6)))
    d1, d2 = rng.uniform(0.1, 3, 6), rng.uniform(0.1, 3, 6)
    m1, m2 = rng.normal(size=6), rng.normal(size=6)
    s1, s2 = q @ np.diag(d1) @ q.T, q @ np.diag(d2) @ q.T
    closed = float(((m1 - m2) ** 2).sum() + ((np.sqrt(d1) - np.sqrt(d2)) ** 2).sum())
    assert frechet_distance(m1, s1, m2, s2) == pytest.approx(closed, rel=1e-9)
    x, y = exact_sample(m1, s1, 40, rng), exact_sample(m2, s2, 40, rng)
    assert fid_from_features(x, y) == pytest.approx(closed, rel=1e-9)


def kid_double_loop(x, y):
    """The unbiased MMD^2 with k(a, b) = (a.b / d + 1)^3, one pair at a time."""
    d = x.shape[1]
    k = lambda a, b: (sum(ai * bi for ai, bi in zip(a, b, strict=True)) / d + 1) ** 3  # noqa: E731
    m, n = len(x), len(y)
    sxx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    syy = sum(k(y[i], y[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    sxy = sum(k(x[i], y[j]) for i in range(m) for j in range(n)) / (m * n)
    return sxx + syy - 2 * sxy


def test_kid_equals_a_double_loop_on_reference_scaled_features():
    rng = np.random.default_rng(2)
    x, y = rng.normal(size=(9, 4)) * 30 + 5, rng.normal(size=(9, 4)) * 25  # unnormalised, like CNN features
    scale = math.sqrt(sum(v * v for v in y.ravel()) / y.size)
    kid, std = kid_from_features(x, y)  # one subset covers both sets: exact
    assert std == 0.0
    assert kid == pytest.approx(kid_double_loop(x / scale, y / scale), rel=1e-10)
    raw, _ = kid_from_features(x, y, rescale=False)
    assert raw == pytest.approx(kid_double_loop(x, y), rel=1e-10)
    # Rescaling makes KID invariant to the feature network's overall scale.
    assert kid_from_features(7 * x, 7 * y)[0] == pytest.approx(kid, rel=1e-10)


def test_knn_radii_on_a_line():
    x = np.arange(10, dtype=float)[:, None]
    r = knn_radii(x, k=3)
    # end points reach their 3rd neighbour at distance 3, the next ones at 2 (1, 1, 2)
    assert r.tolist() == [3, 2, 2, 2, 2, 2, 2, 2, 2, 3]
    with pytest.raises(ValueError, match="k = 10"):
        knn_radii(x, k=10)


def test_precision_recall_on_constructed_sets():
    real = np.arange(10, dtype=float)[:, None]
    assert precision_recall(real, real.copy()) == (1.0, 1.0)
    assert precision_recall(real, real + 100.0) == (0.0, 0.0)
    # Sharp but mode-collapsed: every sample sits on real data (precision 1), but the samples' own
    # balls (radius 0.2-0.3) cover only the real point 0 (recall 1/10).
    collapsed = np.array([[0.0], [0.1], [0.2], [0.3]])
    assert precision_recall(real, collapsed) == (1.0, 0.1)
    # Blurry but diverse: half the samples fall off the data (4.5 is inside the ball of 4 or 5,
    # 11.5 inside the ball of 9 with radius 3; 20 and 30 are outside every ball), while the samples'
    # wide balls (radii 15.5 to 25.5) cover every real point.
    blurry = np.array([[4.5], [11.5], [20.0], [30.0]])
    assert precision_recall(real, blurry) == (0.5, 1.0)


def test_precision_recall_match_a_brute_force_count():
    rng = np.random.default_rng(3)
    real, fake = rng.normal(size=(60, 5)), rng.normal(size=(50, 5)) * 1.3 + 0.4

    def radii(s):
        return [sorted(np.linalg.norm(a - b) for j, b in enumerate(s) if j != i)[2] for i, a in enumerate(s)]

    def share(points, centres, r):
        return sum(any(np.linalg.norm(p - c) <= rc for c, rc in zip(centres, r, strict=True)) for p in points) / len(points)

    p, r = precision_recall(real, fake, k=3)
    assert p == pytest.approx(share(fake, real, radii(real)), abs=1e-12)
    assert r == pytest.approx(share(real, fake, radii(fake)), abs=1e-12)
    assert 0 < r < 1 and 0 < p < 1
