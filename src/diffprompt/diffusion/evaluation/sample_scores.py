"""Scoring images against the test split in a classifier's feature space: FID, KID, precision/recall,
confident share, class histogram and, for a conditional model, conditional accuracy."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from .feature_classifier import FeatureClassifier
from .feature_metrics import fid_from_features, kid_from_features, knn_radii, precision_recall

CONFIDENCE = 0.9
UNBIASED_FID_N = 1000  # below this many samples FID's small-sample bias dominates
PR_NEIGHBOURS = 3


@dataclass
class Reference:
    """The test split in the classifier's feature space, against which images are scored."""

    classifier: FeatureClassifier
    features: np.ndarray
    probs: np.ndarray
    radii: np.ndarray  # each test image's k-NN radius (precision/recall), computed once
    num_classes: int
    seed: int

    @classmethod
    def of(cls, classifier: FeatureClassifier, test_images, num_classes: int, seed: int) -> "Reference":
        features, probs = classifier.run(test_images)
        return cls(classifier, features, probs, knn_radii(features, PR_NEIGHBOURS), num_classes, seed)

    def score(self, images, requested: np.ndarray | None = None) -> dict[str, Any]:
        """`score_images` against this reference."""
        return score_images(self.classifier, images, self.features, self.radii, self.num_classes, self.seed, requested)


def _class_histogram(probs: np.ndarray, k: int) -> list[int]:
    return np.bincount(probs.argmax(1), minlength=k).tolist()


def score_images(clf, images, ref_feats: np.ndarray, ref_radii: np.ndarray, k: int, seed: int,
                 requested: np.ndarray | None = None) -> dict[str, Any]:
    """The scores of `images` against the reference features (and their k-NN radii, computed once);
    with `requested` (the class each was asked for) also the conditional accuracy."""
    feats, probs = clf.run(images)
    kid, kid_std = kid_from_features(feats, ref_feats, num_subsets=100, subset_size=1000, seed=seed)
    precision, recall = precision_recall(ref_feats, feats, k=PR_NEIGHBOURS, real_radii=ref_radii)
    q = {"fid": fid_from_features(feats, ref_feats), "fid_biased": len(feats) < UNBIASED_FID_N,
         "kid": kid, "kid_std": kid_std, "precision": precision, "recall": recall,
         "confident_share": float((probs.max(1) >= CONFIDENCE).mean()),
         "class_histogram": _class_histogram(probs, k), "n": int(len(feats))}
    if requested is not None:
        q["conditional_accuracy"] = float((probs.argmax(1) == requested).mean())
    return q
