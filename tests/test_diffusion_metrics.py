"""FID, KID and precision/recall against independent computations with known answers."""

import math

import numpy as np
import pytest

from diffprompt.diffusion.evaluation import feature_metrics
from diffprompt.diffusion.evaluation.feature_metrics import (
    feature_stats,
    fid_from_features,
    frechet_distance,
    kid_from_features,
    knn_radii,
    mmd2_unbiased,
    polynomial_kernel,
    precision_recall,
    share_inside,
)
from diffprompt.diffusion.evaluation.sample_scores import Reference, score_images


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


def kid_double_loop(x, y, degree=3):
    """The unbiased MMD^2 with k(a, b) = (a.b / d + 1)^degree, one pair at a time."""
    d = x.shape[1]
    k = lambda a, b: (sum(ai * bi for ai, bi in zip(a, b, strict=True)) / d + 1) ** degree
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
    with pytest.raises(ValueError, match=r"k = 10 needs 1 <= k < the number of points \(10\)"):
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


def test_feature_stats_need_a_matrix_of_at_least_two_rows():
    assert [a.tolist() for a in feature_stats([[0.0, 1.0], [2.0, 5.0]])] == [[1.0, 3.0], [[2.0, 4.0], [4.0, 8.0]]]
    with pytest.raises(ValueError, match=r"^need at least 2 feature vectors for a covariance$"):
        feature_stats([[0.0, 1.0]])
    with pytest.raises(ValueError, match=r"features must be a 2-D array \[N, D\], got shape \(3,\)"):
        feature_stats([0.0, 1.0, 2.0])


def test_fid_of_one_dimensional_features_is_the_gaussian_closed_form():
    # 1-D: (m1 - m2)^2 + (s1 - s2)^2. x: mean 1, variance 2; y: mean 4, variance 9.
    x, y = np.array([[0.0], [2.0]]), np.array([[1.0], [4.0], [7.0]])
    assert fid_from_features(x, y) == pytest.approx(9.0 + (math.sqrt(2.0) - 3.0) ** 2, rel=1e-12)


def test_metrics_are_computed_in_float64_whatever_the_input_dtype():
    """Feature networks on a GPU return float32; the metrics still carry float64 precision."""
    rng = np.random.default_rng(4)
    x32, y32 = rng.normal(size=(7, 3)).astype(np.float32), (rng.normal(size=(7, 3)) + 0.1).astype(np.float32)
    x, y = x32.astype(np.float64), y32.astype(np.float64)
    assert kid_from_features(x32, y32, rescale=False)[0] == pytest.approx(kid_double_loop(x, y), rel=1e-12)
    s1, s2 = np.cov(x, rowvar=False), np.cov(y, rowvar=False) + np.diag([0.1, 0.2, 0.7])
    m1, m2, s1_32, s2_32 = x.mean(0), y.mean(0), s1.astype(np.float32), s2.astype(np.float32)
    assert frechet_distance(m1, s1_32, m2, s2) == frechet_distance(m1, s1_32.astype(np.float64), m2, s2)
    assert frechet_distance(m1, s1, m2, s2_32) == frechet_distance(m1, s1, m2, s2_32.astype(np.float64))
    # Extended-precision means are rounded to float64 too: a difference below its resolution vanishes.
    one, nudged, zero = np.ones(1), np.ones(1, dtype=np.longdouble) + np.longdouble(2.0) ** -60, [[0.0]]
    assert frechet_distance(nudged, zero, one, zero) == 0.0
    assert frechet_distance(one, zero, nudged, zero) == 0.0


def test_polynomial_kernel_defaults_to_the_kid_kernel():
    x, y = np.array([[1.0, 2.0], [0.0, -1.0]]), np.array([[3.0, 1.0]])
    assert polynomial_kernel(x, y).tolist() == [[(5 / 2 + 1) ** 3], [(-1 / 2 + 1) ** 3]]
    assert polynomial_kernel(x, y, degree=2, gamma=0.25, coef0=2.0).tolist() == [[(1.25 + 2) ** 2], [(-0.25 + 2) ** 2]]


def test_unbiased_mmd_needs_two_samples_a_side_and_honours_the_degree():
    rng = np.random.default_rng(5)
    x, y = rng.normal(size=(2, 3)), rng.normal(size=(2, 3)) + 0.5
    assert mmd2_unbiased(x, y) == pytest.approx(kid_double_loop(x, y), rel=1e-12)
    assert mmd2_unbiased(x, y, degree=2) == pytest.approx(kid_double_loop(x, y, degree=2), rel=1e-12)
    assert kid_double_loop(x, y, degree=2) != pytest.approx(kid_double_loop(x, y), rel=1e-3)
    for a, b in [(x[:1], rng.normal(size=(5, 3))), (rng.normal(size=(5, 3)), y[:1])]:
        with pytest.raises(ValueError, match=r"^need at least 2 samples on each side for the unbiased MMD$"):
            mmd2_unbiased(a, b)


def test_kid_subsets_draw_without_replacement():
    """The smaller set (3 points) fills every subset and the larger is one point repeated, so every
    subset gives the same unbiased MMD; a draw with replacement would repeat points of the smaller set."""
    rng = np.random.default_rng(6)
    spread, same = rng.normal(size=(3, 2)), np.tile(rng.normal(size=(1, 2)), (4, 1))
    for x, y in [(spread, same), (same, spread)]:
        mean, std = kid_from_features(x, y, num_subsets=20, rescale=False)
        assert mean == pytest.approx(kid_double_loop(x[:3], y[:3]), rel=1e-12)
        assert std == pytest.approx(0.0, abs=1e-12)


def test_kid_defaults_to_100_subsets_of_1000_with_seed_0(monkeypatch):
    rng = np.random.default_rng(7)
    x, y = rng.normal(size=(5, 2)), rng.normal(size=(8, 2))
    assert kid_from_features(x, y) == kid_from_features(x, y, num_subsets=100, seed=0)
    assert kid_from_features(x, y) != kid_from_features(x, y, num_subsets=100, seed=1)
    # Subset size and count, seen through an MMD that reports the size of its subsets.
    sizes = []
    monkeypatch.setattr(feature_metrics, "mmd2_unbiased", lambda a, b: sizes.append((len(a), len(b))) or len(a))
    big = rng.normal(size=(1001, 2))
    assert kid_from_features(big, big + 1.0) == (1000.0, 0.0)
    assert sizes == [(1000, 1000)] * 100


def test_knn_radii_take_any_k_and_chunk_from_1_and_default_to_3():
    x = np.arange(10, dtype=float)[:, None]
    assert knn_radii(x, k=1).tolist() == [1.0] * 10
    assert knn_radii(x, k=3, chunk=3).tolist() == [3, 2, 2, 2, 2, 2, 2, 2, 2, 3]
    assert knn_radii(x).tolist() == [3, 2, 2, 2, 2, 2, 2, 2, 2, 3]
    with pytest.raises(ValueError, match=r"k = 0 needs"):
        knn_radii(x, k=0)


def test_share_inside_counts_points_on_a_ball_boundary_and_every_chunk():
    real = np.arange(10, dtype=float)[:, None]
    radii = knn_radii(real)  # 9's ball has radius 3
    assert share_inside([[12.0], [12.5]], real, radii) == 0.5
    points = np.array([[0.0], [50.0], [1.0], [2.0], [60.0]])
    assert share_inside(points, real, radii, chunk=2) == 0.6


def test_precision_recall_use_the_given_k_and_real_radii():
    real = np.arange(10, dtype=float)[:, None]
    generated = np.array([[0.0], [1.0], [12.0], [13.0]])
    # k = 1: real radii 1 hold 0 and 1 only; generated radii 1 cover the real 0, 1 and 2.
    assert precision_recall(real, generated, k=1) == (0.5, 0.3)
    # k = 3: 9's ball (radius 3) reaches 12 too; generated radii 12-13 cover every real point.
    assert precision_recall(real, generated) == (0.75, 1.0)
    # Radii of 0: only samples that are real points count.
    assert precision_recall(real, generated, real_radii=np.zeros(10)) == (0.5, 1.0)


class EchoClassifier:
    """A classifier whose 'images' are already its outputs (features, class probabilities)."""

    def run(self, images):
        return images


PROBS = np.array([[0.9, 0.1, 0.0, 0.0], [0.2, 0.7, 0.1, 0.0], [0.05, 0.05, 0.9, 0.0],
                  [0.3, 0.4, 0.3, 0.0], [0.95, 0.05, 0.0, 0.0], [0.1, 0.1, 0.8, 0.0]])


def test_score_images_reports_every_metric_of_the_features():
    rng = np.random.default_rng(8)
    feats, ref = rng.normal(size=(6, 3)), rng.normal(size=(9, 3)) + 0.3
    radii = knn_radii(ref, 3)
    got = score_images(EchoClassifier(), (feats, PROBS), ref, radii, k=4, seed=7, requested=np.array([0, 1, 1, 0, 0, 0]))
    kid, kid_std = kid_from_features(feats, ref, seed=7)
    assert kid_std > 0  # 6 against 9 features: random subsets
    assert got == {"fid": fid_from_features(feats, ref), "fid_biased": True, "kid": kid, "kid_std": kid_std,
                   "precision": precision_recall(ref, feats)[0], "recall": precision_recall(ref, feats)[1],
                   "confident_share": 0.5,  # 0.9 itself counts as confident
                   "class_histogram": [2, 2, 2, 0],  # class 3, never predicted, still has its bin
                   "n": 6, "conditional_accuracy": 0.5}


def test_scores_use_the_reference_radii_given():
    """Radii are computed once per reference (`Reference.of`) and reused for every sample set."""
    ref = np.arange(10, dtype=float)[:, None]
    feats = np.array([[0.0], [1.5], [2.0], [3.5], [4.0], [12.0]])
    reference = Reference.of(EchoClassifier(), (ref, np.eye(4)[np.arange(10) % 4]), num_classes=4, seed=0)
    assert reference.radii.tolist() == [3, 2, 2, 2, 2, 2, 2, 2, 2, 3]
    assert reference.score((feats, PROBS))["precision"] == 1.0
    reference.radii = np.zeros(10)  # only samples that are reference points count
    assert reference.score((feats, PROBS))["precision"] == 0.5


def test_fid_is_flagged_biased_below_1000_samples():
    rng = np.random.default_rng(9)
    ref = rng.normal(size=(4, 2))
    for n, biased in [(999, True), (1000, False)]:
        feats = rng.normal(size=(n, 2))
        probs = np.tile([1.0, 0.0], (n, 1))
        assert score_images(EchoClassifier(), (feats, probs), ref, knn_radii(ref, 3), k=2, seed=0)["fid_biased"] is biased


def test_score_images_averages_kid_over_100_subsets_of_1000(monkeypatch):
    sizes = []
    monkeypatch.setattr(feature_metrics, "mmd2_unbiased", lambda a, b: sizes.append((len(a), len(b))) or len(a))
    rng = np.random.default_rng(10)
    feats, ref = rng.normal(size=(1001, 2)), rng.normal(size=(1001, 2))
    got = score_images(EchoClassifier(), (feats, np.tile([1.0, 0.0], (1001, 1))), ref, knn_radii(ref, 3), k=2, seed=0)
    assert (got["kid"], got["kid_std"]) == (1000.0, 0.0)
    assert sizes == [(1000, 1000)] * 100
