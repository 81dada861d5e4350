"""eval.md: the evaluation's results as Markdown tables, with the reference, floor and classifier stated."""

from __future__ import annotations

import math
from typing import Any

from .sample_scores import CONFIDENCE, PR_NEIGHBOURS, UNBIASED_FID_N


def _fmt(v, digits: int = 3) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "—"
    return f"{v:.{digits}f}"


def _quality_cells(q: dict[str, Any]) -> str:
    fid = _fmt(q["fid"], 2) + (" (biased)" if q.get("fid_biased") else "")
    return (f"{fid} | {_fmt(q['kid'] * 1e3, 2)} ± {_fmt(q['kid_std'] * 1e3, 2)} | {_fmt(q['precision'])} | "
            f"{_fmt(q['recall'])} | {_fmt(q['confident_share'])}")


def _conditional_note(r: dict[str, Any]) -> list[str]:
    """The paragraph that says how a conditional model was sampled and scored."""
    c = r.get("conditional")
    if not c:
        return []
    asked = ("classes requested in the training split's proportions (samples per class: "
             f"{', '.join(map(str, c['requested_counts']))})" if "requested_counts" in c else "classes requested evenly")
    return ["", f"Class-conditional model ({c['num_classes']} classes), {asked}, classifier-free "
            f"guidance scales w = {', '.join(f'{w:g}' for w in c['guidance'])} (0: the plain conditional model; "
            "eps = (1 + w) eps(x, class) - w eps(x, no class), one network call per step on a doubled batch). "
            "Conditional accuracy: the share of samples the classifier assigns to the class asked for; "
            f"on real test images it is the classifier's test accuracy, {r['classifier']['test_accuracy']:.4f}."]


def feature_network_text(c: dict[str, Any]) -> str:
    """One sentence naming the feature network (eval.json's "classifier") and what its FIDs compare with."""
    acc = f"test accuracy {c['test_accuracy']:.4f}"
    source = c.get("source", "local")
    if source == "local":
        what = f"a small CNN trained on this machine (cached as `{c.get('key')}`; {acc})"
    else:
        kind = "the shipped feature network" if source == "shipped" else "the feature network file"
        what = f"{kind} `{c.get('key')}` (sha256 `{c.get('sha256', '')[:12]}`; {acc})"
    comparable = c.get("comparable", "only with runs on this machine and torch version")
    return f"Features: {what}; its FID/KID compare {comparable}, not with Inception FIDs."


def render_markdown(r: dict[str, Any]) -> str:
    """The results as a Markdown table with the reference, floor and classifier stated."""
    n = r["n_samples"]
    lines = [
        f"# Evaluation of {r.get('checkpoint')}" + (f" (step {r['step']})" if r.get("step") is not None else "")
        + (" — its raw weights, not their EMA" if r.get("weights") == "raw" else ""),
        "",
        f"Data set `{r['dataset']}`; {n} samples per sampler and {r['real_floor']['n']} real images for the floor, "
        f"compared with the {r['reference']}. {feature_network_text(r['classifier'])} "
        f"Precision/recall: k = {PR_NEIGHBOURS} nearest neighbours. Confident share: classifier "
        f"probability >= {CONFIDENCE}."
        + (f" FID below n = {UNBIASED_FID_N} is biased upwards: read KID." if n < UNBIASED_FID_N else ""),
        *_conditional_note(r),
        "",
        f"| sampler | network calls | FID (n = {n}) | KID × 10³ | precision | recall | confident share |"
        + (" w | conditional accuracy |" if "conditional" in r else "") + " s / image |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |" + (" ---: | ---: |" if "conditional" in r else "") + " ---: |",
    ]
    for s in r["samplers"]:
        cond = f" {s['guidance']:g} | {_fmt(s['conditional_accuracy'])} |" if "conditional" in r else ""
        lines.append(f"| {s['sampler']} | {s['model_calls_per_image']} | {_quality_cells(s)} |{cond} "
                     f"{_fmt(s['seconds_per_image'], 4)} |")
    f = r["real_floor"]
    lines.append(f"| real-data floor ({f['what']}) | — | {_quality_cells(f)} |" + (" — | — |" if "conditional" in r else "")
                 + " — |")
    names = r.get("class_names") or [str(i) for i in range(len(f["class_histogram"]))]
    lines += ["", "Class histograms of the samples (classifier's argmax):", "",
              "| sampler | " + " | ".join(names) + " |", "| --- |" + " ---: |" * len(f["class_histogram"])]
    for s in r["samplers"]:
        lines.append(f"| {s['sampler']} | " + " | ".join(str(c) for c in s["class_histogram"]) + " |")
    lines.append("| real floor | " + " | ".join(str(c) for c in f["class_histogram"]) + " |")
    if "nll" in r:
        b = r["nll"]
        how = ("all T terms" if b.get("exact", True) else
               f"unbiased estimate from {b['timesteps']} stratified timesteps per image")
        terms = f"; prior L_T {b['prior_bpd']:.2e}, decoder L_0 {b['decoder_bpd']:.3f}" if "prior_bpd" in b else ""
        terms += "".join(f", KL terms t = {d['t_from']}–{d['t_to']} {d['bpd']:.3f}" for d in b.get("band_bpd", []))
        how += f", given {b['given']}" if "given" in b else ""
        lines += ["", f"NLL (variational bound, {how}) on a stratified sample of {b['images']} test images: "
                  f"**{b['bpd']:.3f} ± {b['bpd_stderr']:.3f} bits/dim** (± one standard error{terms})."]
    m = r.get("machine", {})
    lines += ["", f"Machine: {m.get('cpu_model', m.get('processor'))}, {m.get('cpu_count')} CPUs, "
              f"torch {m.get('torch')} ({m.get('torch_threads')} threads), device {r.get('device')}."]
    return "\n".join(lines) + "\n"
