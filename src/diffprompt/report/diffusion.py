"""Diffusion runs on the page: quality, speed and likelihood from `eval.json`, training from
`train_summary.json`, and the pictures, each captioned with how it was made.

`eval.json` is written by `diffusion.evaluation.evaluate_model.evaluate`: one row per sampler (FID, KID and
its std, confident share, class histogram, seconds per image, steps), the real-data floor (the
same metrics for real train images against the same test split) and the bits/dim bound. A
class-conditional model's rows are one per sampler and guidance scale w, each with its
conditional accuracy; the demo's grid of it has a row per class.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any

from ..diffusion.evaluation.markdown import feature_network_text
from ..diffusion.visualize import fid_against_calls
from .markup import paragraph, plot_figure, table
from .numbers import DASH, count, fixed, is_number, one_decimal, percent, plus_minus, seconds, sig, times
from .view import Headline, RunView, read_json


def view(run: Path, cfg: dict) -> RunView:
    v = RunView()
    ev = read_json(run, "eval.json")
    if is_eval(ev):
        v.headlines.append(eval_headline(ev, shown_row(ev, cfg)))
        v.parts += eval_parts(ev)
        v.used.add("eval.json")
    summary = read_json(run, "train_summary.json")
    if isinstance(summary, dict) and is_number(summary.get("steps")):
        if "eval.json" not in v.used:
            v.headlines.append(train_headline(summary, cfg))
        v.parts.append(("Training", train_table(summary, cfg)))
        v.used.add("train_summary.json")
    add_pictures(v, run, cfg, ev if "eval.json" in v.used else None, summary)
    return v


# ---------------------------------------------------------------------------------------------
# eval.json


SAMPLER_KEYS = ("sampler", "steps", "fid", "kid", "kid_std", "confident_share", "class_histogram", "seconds_per_image")
FLOOR_KEYS = ("fid", "kid", "kid_std", "confident_share", "class_histogram")


def is_eval(ev) -> bool:
    """Whether `ev` has the shape `evaluate` writes (anything else is shown as a plain table)."""
    return (isinstance(ev, dict) and all(k in ev for k in ("dataset", "n_samples", "reference", "classifier"))
            and isinstance(ev.get("samplers"), list) and bool(ev["samplers"])
            and all(isinstance(s, dict) and all(k in s for k in SAMPLER_KEYS) for s in ev["samplers"])
            and isinstance(ev.get("real_floor"), dict) and all(k in ev["real_floor"] for k in FLOOR_KEYS))


def speedup(ref: dict, s: dict) -> float:
    return ref["seconds_per_image"] / s["seconds_per_image"] if s["seconds_per_image"] > 0 else float("nan")


def _kid_unit(rows: list[dict]) -> tuple[float, str]:
    """KID × 10³ for the small values of normalised features; as is for this project's raw CNN features."""
    small = all(abs(r["kid"]) < 0.1 for r in rows if is_number(r.get("kid")))
    return (1e3, "KID × 10³") if small else (1.0, "KID")


def reference_sampler(samplers: list[dict]) -> dict:
    """The sampler speed-ups are measured against: the one with the most steps (DDPM-T where present)."""
    return max(samplers, key=lambda s: (s["steps"], s["seconds_per_image"]))


def _fid_header(ev: dict) -> str:
    ns = {s.get("n") for s in ev["samplers"]}
    return f"FID (n = {ns.pop()})" if len(ns) == 1 and None not in ns else "FID"


def eval_headline(ev: dict, shown: dict) -> Headline:
    rows, floor = ev["samplers"], ev["real_floor"]
    ref = reference_sampler(rows)
    scale, kid = _kid_unit(rows + [floor])
    table_rows = [[s["sampler"], count(s["steps"]), one_decimal(s["fid"]),
                   plus_minus(s["kid"] * scale, s["kid_std"] * scale), sig(s["seconds_per_image"]),
                   times(speedup(ref, s))] for s in rows]
    table_rows.append(["Real images (floor)", DASH, one_decimal(floor["fid"]),
                       plus_minus(floor["kid"] * scale, floor["kid_std"] * scale), DASH, DASH])
    return Headline(
        title=f"Diffusion: the {'class-conditional' if 'conditional' in ev else 'unconditional'} model on {ev['dataset']}",
        sentences=eval_sentences(ev, ref, shown),
        columns=["Sampler", "Steps", _fid_header(ev), kid, "s / image", f"Speed-up vs {ref['sampler']}"],
        rows=table_rows, row_classes=[""] * len(rows) + ["floor"])


def eval_sentences(ev: dict, ref: dict, shown: dict) -> list[str]:
    rows, floor = ev["samplers"], ev["real_floor"]
    step = f" at training step {ev['step']}" if ev.get("step") is not None else ""
    out = [f"The model{step} drew {ev['n_samples']} images of {ev['dataset']} with each sampler; "
           f"they are compared with the {ev['reference']}."]
    biased = any(q.get("fid_biased") for q in rows + [floor])
    score = partial(_score, kid_first=biased, scale=_kid_unit(rows + [floor])[0])
    name = score(ref)[0]
    fast = min(rows, key=lambda s: s["seconds_per_image"])
    if fast is not ref:
        out.append(f"{fast['sampler']} draws an image in {sig(fast['seconds_per_image'])} s, "
                   f"{times(speedup(ref, fast))} faster than {ref['sampler']} ({sig(ref['seconds_per_image'])} s), "
                   f"at {name} {score(fast)[1]} against {score(ref)[1]}.")
    best = min(rows, key=lambda s: s["kid"] if biased else s["fid"])
    out.append(f"The best {name} is {best['sampler']}'s, {score(best)[1]}; real images score {score(floor)[1]} "
               "at this n, the floor a perfect model would reach.")
    out.append(against_real(ev, shown))
    nll = ev.get("nll")
    if isinstance(nll, dict) and is_number(nll.get("bpd")):
        out.append(f"The likelihood bound on {nll['images']} {nll.get('split', 'test')} images is "
                   f"{plus_minus(nll['bpd'], nll.get('bpd_stderr'))} bits/dim.")
    if biased:
        out.append(f"At n = {ev['n_samples']} FID is biased upwards, so KID, an unbiased estimate, is the score "
                   "to compare.")
    out.append(feature_network_text(ev["classifier"]))
    return out


# "Close to real data": the targets, FID within 3x the real-data floor at the same n and a
# confident share within 5 points of real test images'.
CLOSE_FID_RATIO = 3.0
CLOSE_CONFIDENT_SHARE = 0.05


def shown_row(ev: dict, cfg: dict) -> dict:
    """The scored row with the demo grid's sampler and guidance scale, else the one with the lowest FID."""
    grid = cfg.get("samples") or {}
    same = [s for s in ev["samplers"] if s.get("spec") == grid.get("spec") and s.get("guidance") == grid.get("guidance")]
    return same[0] if same and grid.get("spec") else min(ev["samplers"], key=lambda s: s["fid"])


def against_real(ev: dict, row: dict) -> str:
    """One plain sentence, computed from the numbers: how good `row`'s samples are against real data."""
    c, floor = ev["classifier"], ev["real_floor"]
    real_share = c.get("test_confident_share")
    ratio = row["fid"] / floor["fid"] if is_number(floor["fid"]) and floor["fid"] > 0 else float("nan")
    close = (is_number(real_share) and row["confident_share"] >= real_share - CLOSE_CONFIDENT_SHARE
             and ratio <= CLOSE_FID_RATIO)
    name, w = row["sampler"], row.get("guidance")
    if w is not None:
        name = name.replace(f"-w{w:g}", "") + f" samples at guidance w = {w:g}"
    else:
        name += " samples"
    asked = (f", gives {percent(row['conditional_accuracy'], 0)} % of them the class asked for (real test images: "
             f"{percent(c.get('test_accuracy'), 0)} %)" if is_number(row.get("conditional_accuracy")) else "")
    return (f"Against real data the {name} are {'close' if close else 'still short'}: the classifier is confident "
            f"on {percent(row['confident_share'], 0)} % of them against {percent(real_share, 0)} % of real test "
            f"images{asked}, and their FID is {times(ratio)} the real-data floor ({one_decimal(row['fid'])} against "
            f"{one_decimal(floor['fid'])}).")


def _score(q: dict, kid_first: bool, scale: float) -> tuple[str, str]:
    """("FID", "68.5") or, where FID is biased at this n, ("KID", "3.1 ± 0.4 × 10⁻³")."""
    if kid_first:
        return "KID", plus_minus(q["kid"] * scale, q["kid_std"] * scale) + (" × 10⁻³" if scale != 1 else "")
    return "FID", one_decimal(q["fid"])


def eval_parts(ev: dict) -> list[tuple[str, str]]:
    parts = [("Sample quality and speed", quality_table(ev) + calls_figure(ev)),
             ("Which classes the samples show", class_table(ev))]
    nll = ev.get("nll")
    if isinstance(nll, dict) and is_number(nll.get("bpd")):
        parts.append(("Likelihood", likelihood_table(nll)))
    parts.append(("How it was measured", paragraph(measured_text(ev))))
    return parts


def calls_figure(ev: dict) -> str:
    """FID against network calls per image, when there are at least two samplers."""
    fig = fid_against_calls(ev["samplers"], ev["real_floor"])
    if fig is None:
        return ""
    return plot_figure(fig, f"FID of {ev['n_samples']} samples against the network calls each image cost (log scale), "
                            "one line per sampler; the dashed line is the real-data floor at the same n.")


def quality_table(ev: dict) -> str:
    rows, floor = ev["samplers"], ev["real_floor"]
    ref = reference_sampler(rows)
    scale, kid = _kid_unit(rows + [floor])
    pr = all(is_number(q.get("precision")) and is_number(q.get("recall")) for q in rows + [floor])
    c, cond = ev["classifier"], "conditional" in ev
    columns = ["Sampler", "Steps", *(["w"] if cond else []), _fid_header(ev), kid,
               *(["Precision", "Recall"] if pr else []), "Confident (%)",
               *(["Conditional accuracy (%)"] if cond else []), "s / image", f"Speed-up vs {ref['sampler']}"]

    def cells(q: dict, w, accuracy) -> list[str]:
        return [*([w] if cond else []), one_decimal(q["fid"]), plus_minus(q["kid"] * scale, q["kid_std"] * scale),
                *([fixed(q["precision"], 2), fixed(q["recall"], 2)] if pr else []), percent(q["confident_share"], 0),
                *([percent(accuracy)] if cond else [])]

    body = [[s["sampler"], count(s["steps"]),
             *cells(s, f"{s['guidance']:g}" if is_number(s.get("guidance")) else DASH, s.get("conditional_accuracy")),
             sig(s["seconds_per_image"]), times(speedup(ref, s))] for s in rows]
    body.append([f"Real images: {floor.get('what', 'train vs test')}", DASH, *cells(floor, DASH, c.get("test_accuracy")),
                 DASH, DASH])
    note = ("Precision: the share of samples that look like real images; recall: the share of real images the "
            "samples cover (nearest neighbours in feature space). " if pr else "")
    note += (f"Confident: the share of images the classifier labels with probability ≥ "
             f"{c.get('confidence_threshold', 0.9)} (real test images: {percent(c.get('test_confident_share'), 0)} %). "
             "The last row is the floor: real images scored the same way.")
    if cond:
        note += (" w: the classifier-free guidance scale (0: the plain conditional model). Conditional accuracy: the "
                 "share of samples the classifier assigns to the class asked for (every class asked for equally "
                 "often); in the floor row, its accuracy on the real test images.")
    return table(columns, body, row_classes=[""] * len(rows) + ["floor"]) + paragraph(note, "muted")


def class_table(ev: dict) -> str:
    floor = ev["real_floor"]
    names = ev.get("class_names") or [str(i) for i in range(len(floor["class_histogram"]))]
    rows = [[s["sampler"], *[str(c) for c in s["class_histogram"]]] for s in ev["samplers"]]
    rows.append(["Real images (floor)", *[str(c) for c in floor["class_histogram"]]])
    note = ("How many images the classifier assigns to each class; an even spread means every class is drawn "
            f"(out of {ev['n_samples']} per row).")
    return (table(["Sampler", *names], rows, row_classes=[""] * len(ev["samplers"]) + ["floor"])
            + paragraph(note, "muted"))


def likelihood_table(nll: dict) -> str:
    terms = is_number(nll.get("prior_bpd")) and is_number(nll.get("decoder_bpd"))
    columns = ["Bits/dim (bound)", *(["Prior L_T (bits/dim)", "Decoder L_0 (bits/dim)"] if terms else []),
               "Test images", "Time (s)"]
    row = [plus_minus(nll["bpd"], nll.get("bpd_stderr")),
           *([sig(nll["prior_bpd"], 2), sig(nll["decoder_bpd"], 3)] if terms else []),
           count(nll.get("images")), seconds(nll.get("seconds"))]
    how = ("the full variational bound (L_T + every KL term + the discretised decoder L_0)" if nll.get("exact", True)
           else f"an unbiased estimate of the variational bound from {nll.get('timesteps')} timesteps per image")
    note = f"Bits/dim: {how}, mean ± standard error over the images."
    return table(columns, [row], kinds="n" * len(columns)) + paragraph(note, "muted")


def measured_text(ev: dict) -> str:
    c, m = ev["classifier"], ev.get("machine", {})
    return (f"{feature_network_text(c)} Seed {ev.get('seed')}, device "
            f"{ev.get('device')}; {m.get('cpu_model', m.get('processor', 'CPU'))}, {m.get('cpu_count')} CPUs, "
            f"torch {m.get('torch')} with {m.get('torch_threads')} threads.")


# ---------------------------------------------------------------------------------------------
# train_summary.json


def train_headline(summary: dict, cfg: dict) -> Headline:
    budget = " (stopped by its time budget)" if summary.get("stopped_early_by_time_budget") else ""
    text = (f"Trained {count(summary['steps'])} steps{budget} in {seconds(summary['train_seconds'])} s on "
            f"{summary.get('device', 'cpu')}, {sig(summary['images_per_s'])} images / s; "
            f"the last logged loss is {sig(summary.get('final_loss'), 3)}.")
    return Headline(title=f"Diffusion: training on {cfg.get('dataset', 'images')}", sentences=[text])


def train_table(summary: dict, cfg: dict) -> str:
    columns = ["Steps", "Batch", "Images seen", "Time (s)", "Images / s", "Final loss", "Parameters"]
    row = [count(summary["steps"]), count(cfg.get("batch_size")), count(summary.get("images_seen")),
           seconds(summary.get("train_seconds")), sig(summary.get("images_per_s")),
           sig(summary.get("final_loss"), 3), count(summary.get("parameters"))]
    return table(columns, [row], kinds="n" * len(columns))


# ---------------------------------------------------------------------------------------------
# Pictures


def picture_facts(cfg: dict) -> dict[str, Any]:
    """How the pictures were made: the demo records it; a training run's config implies it."""
    if "samples" in cfg:
        return cfg
    if "sample_sampler" in cfg:
        sampler = cfg["sample_sampler"]
        steps = cfg.get("sample_steps") if sampler == "ddim" else steps_and_schedule(cfg)[0]
        return {"samples": {"sampler": f"{sampler.upper()}-{steps}", "n": cfg.get("sample_n"), "seed": cfg.get("seed")},
                "real": {"n": cfg.get("sample_n"), "split": "test"}}
    return {}


def add_pictures(v: RunView, run: Path, cfg: dict, ev: dict | None, summary: dict | None) -> None:
    facts = picture_facts(cfg)
    dataset = cfg.get("dataset") or (ev or {}).get("dataset") or "the data set"
    step = cfg.get("model_step", (summary or {}).get("steps"))
    pair = [("real.png", real_caption(facts.get("real", {}), dataset)),
            ("samples.png", samples_caption(facts.get("samples", {}), step, cfg.get("checkpoint")))]
    v.figure_row(*[p for p in pair if (run / p[0]).exists()])
    if (run / "eval-guidance.png").exists():
        v.figure_row(("eval-guidance.png", "FID (left) and conditional accuracy (right) against the guidance scale "
                                           "w, a line per sampler: the fidelity-diversity trade-off of classifier-free "
                                           "guidance; the dashed line is the classifier's accuracy on real test images."))
    if ev:
        v.figure_row(*[(f"eval-samples-{s['sampler'].lower().split(' ')[0]}.png", eval_samples_caption(ev, s))
                       for s in ev["samplers"]
                       if (run / f"eval-samples-{s['sampler'].lower().split(' ')[0]}.png").exists()])
    chain = facts.get("chain", {})
    for name, caption in (("forward.png", forward_caption(chain, cfg)), ("reverse.png", reverse_caption(chain)),
                          ("reverse.gif", f"The same reverse chain, animated{_by(chain)}."),
                          ("pred_x0.png", "The model's estimate of x_0 at the same steps of the chain: "
                                          "the image it is steering towards."),
                          ("loss.png", loss_caption(cfg, summary))):
        if (run / name).exists():
            v.figure_row((name, caption))


def eval_samples_caption(ev: dict, s: dict) -> str:
    """What `evaluate` drew of a sampler's scored samples: the first 64, or for a conditional model
    (sample i asks for class i mod K) the first 6 K, a column per class."""
    k = (ev.get("conditional") or {}).get("num_classes")
    shown = min(6 * k if k else 64, s["n"])
    return f"{s['sampler']}: the first {shown} of the {s['n']} samples scored below" + (", a column per class" if k else "")


def _by(facts: dict) -> str:
    return f" with {facts['sampler']}" if facts.get("sampler") else ""


def real_caption(real: dict, dataset: str) -> str:
    if not real.get("n"):
        return f"Real images of {dataset}"
    if real.get("per_class"):
        return (f"Real images: the first {real['per_class']} {real.get('split', 'test')} images of each class of "
                f"{dataset}, {class_rows_note(real)}")
    return (f"Real images: {real['n']} {real.get('split', 'test')} images of {dataset}, a stratified sample "
            "(every class in its share)")


def samples_caption(samples: dict, step, checkpoint: str | None = None) -> str:
    at = f" by the model at training step {step}" if step is not None else ""
    if not samples.get("sampler"):
        return f"Samples drawn{at}"
    n = f"{samples['n']} images" if samples.get("n") else "images"
    seed = f", seed {samples['seed']}" if samples.get("seed") is not None else ""
    if samples.get("per_class"):
        of = f" of {Path(checkpoint).name}" if checkpoint else ""
        return (f"Samples: {samples['per_class']} of each class, {class_rows_note(samples)}, drawn with "
                f"{samples['sampler']} and classifier-free guidance w = {samples['guidance']:g}{at}{of}{seed}")
    return f"Samples: {n} drawn with {samples['sampler']}{at}{seed}"


def class_rows_note(facts: dict) -> str:
    """"a row per class (row = class 0..9)", with the class names where they are not the digits."""
    k = facts.get("classes") or 0
    names = facts.get("class_names") or []
    named = f": {', '.join(names)}" if names and names != [str(i) for i in range(k)] else ""
    return f"a row per class (row = class 0..{k - 1}{named})"


def steps_and_schedule(cfg: dict) -> tuple[int | None, str | None]:
    """(T, the schedule's name) of a run's config: from the model's diffusion spec or the training
    config, in the keys of every version (`num_timesteps`; before it `T` in a spec, `timesteps` in a config)."""
    spec = cfg.get("diffusion") or cfg
    schedule = spec.get("schedule")
    if isinstance(schedule, dict):
        return schedule.get("num_timesteps", schedule.get("T")), schedule.get("name")
    return spec.get("num_timesteps", spec.get("timesteps")), schedule


def forward_caption(chain: dict, cfg: dict) -> str:
    num_timesteps, schedule = steps_and_schedule(cfg)
    what = f" (T = {num_timesteps}, {schedule} schedule)" if num_timesteps and schedule else ""
    rows = f"{chain['n']} test images (rows)" if chain.get("n") else "test images (rows)"
    return (f"Forward process q(x_t | x_0): {rows} noised from x_0 (left) to x_T (right){what}; "
            "each column is labelled with its t.")


def reverse_caption(chain: dict) -> str:
    n = f"{chain['n']} samples" if chain.get("n") else "samples"
    asked = (f" (classes {', '.join(str(c) for c in chain['labels'])}, top to bottom, guidance w = "
             f"{chain['guidance']:g})" if chain.get("labels") else "")
    return f"Reverse chain{_by(chain)}: {n}{asked} from pure noise x_T (left) to x_0 (right), at evenly spaced steps."


def loss_caption(cfg: dict, summary: dict | None) -> str:
    loss_type = cfg.get("loss_type", cfg.get("loss"))  # "loss": the key before the rename
    what = f" ({loss_type} loss)" if loss_type else ""
    steps = f" over {count(summary['steps'])} steps of batch {cfg.get('batch_size')}" if summary else ""
    return f"Training loss{what} against step{steps}."
