"""Evaluating a trained DDPM (`evaluate_model.evaluate`, written up by `markdown.render_markdown`).

* `feature_classifier`: the small CNN whose features the sample scores are computed in;
* `feature_metrics`: FID, KID and improved precision/recall on features;
* `sample_scores`: images scored against the test split (those metrics, confident share, classes);
* `bits_per_dim`: the variational bound on test images;
* `evaluate_model`: the whole evaluation of a run folder or checkpoint, `eval.json` and pictures;
* `markdown`: `eval.md`.
"""
