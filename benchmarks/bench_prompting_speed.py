"""Training-step time and peak memory: the mask-only MLM head against full-vocabulary logits.

Compares, on the same backbone, batch and inputs (one optimiser step = forward, backward, AdamW):

- `prompt-ft`: `PromptClassifier` (hard template, every parameter trained) with the MLM head
  applied only at the mask positions ([B, H] -> [B, V]);
- `full-vocab`: the same model computing MLM logits at every position ([B, L, V]) and then
  gathering the mask (`model.full_vocab_label_logits`): what OpenPrompt and PET do;
- `soft`: a soft template `{x} {soft*4} {mask}` with the backbone frozen (mask-only head);
- `soft-full-vocab`: the same soft model through the full-vocabulary path.

Time: the variants are interleaved step by step in one process (so machine load hits them
alike); the median over the timed rounds is reported, after warm-up steps.

Memory: each variant runs in a fresh subprocess; a thread samples the process's resident set
size (/proc/self/statm) every 0.5 ms during 3 training steps, and we report the peak minus the
level just before the first step: the extra memory a training step needs on top of the loaded
model and inputs (activations, gradients, optimiser state). (`ru_maxrss` alone cannot show it
for the mask-only path: the process's peak from importing and loading is already higher.) We also report the bytes of the
logits tensor each path materialises (B x V vs B x L x V float32).

    python benchmarks/bench_prompting_speed.py                    # batch 32 x 128 tokens
    python benchmarks/bench_prompting_speed.py --batch 32 --length 128 --rounds 10 --threads 1

Writes benchmarks/results/prompting_speed.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

VARIANTS = {
    # name: (template, train mode, full-vocab path?)
    "prompt-ft": ("{x} It was {mask}.", "all", False),
    "full-vocab": ("{x} It was {mask}.", "all", True),
    "soft": ("{x} {soft*4} {mask}", "prompt", False),
    "soft-full-vocab": ("{x} {soft*4} {mask}", "prompt", True),
}


def make_inputs(batch: int, length: int):
    from diffprompt.data import load_text

    ex = load_text("mr").split("train").examples
    # long enough that every input is truncated to exactly `length` tokens
    texts = [" ".join(e.text for e in ex[i * 6:(i + 1) * 6]) for i in range(batch)]
    labels = [i % 2 for i in range(batch)]
    return texts, labels


def build(name: str, length: int):
    import torch

    from diffprompt.prompting import PromptClassifier, load_backbone

    template, train, _ = VARIANTS[name]
    torch.manual_seed(0)
    bb, tok = load_backbone()
    model = PromptClassifier(bb, tok, template, {0: ["bad"], 1: ["good"]}, train=train, max_length=length)
    model.train()
    opt = torch.optim.AdamW(model.trainable_parameters(), lr=1e-5)
    return model, opt


def step(name: str, model, opt, batch, labels) -> None:
    import torch.nn.functional as F

    from diffprompt.prompting.models.prompt_classifier import full_vocab_label_logits

    scores = full_vocab_label_logits(model, batch) if VARIANTS[name][2] else model(batch)
    loss = F.cross_entropy(scores, labels)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()


def time_interleaved(args) -> dict:
    import torch

    texts, labels = make_inputs(args.batch, args.length)
    built = {n: build(n, args.length) for n in VARIANTS}
    batches = {n: built[n][0].encode(texts) for n in VARIANTS}
    for n, b in batches.items():
        assert tuple(b["input_ids"].shape) == (args.batch, args.length), (n, b["input_ids"].shape)
    y = torch.tensor(labels)
    # the two paths give the same label scores (same model, eval mode)
    from diffprompt.prompting.models.prompt_classifier import full_vocab_label_logits

    m = built["prompt-ft"][0]
    m.eval()
    with torch.no_grad():
        diff = (m(batches["prompt-ft"]) - full_vocab_label_logits(m, batches["prompt-ft"])).abs().max().item()
    m.train()
    times = {n: [] for n in VARIANTS}
    for r in range(args.warmup + args.rounds):
        for n in VARIANTS:
            model, opt = built[n]
            t = time.perf_counter()
            step(n, model, opt, batches[n], y)
            dt = time.perf_counter() - t
            if r >= args.warmup:
                times[n].append(dt)
    return {"max_abs_diff_mask_vs_full": diff,
            "step_seconds": {n: {"median": statistics.median(v), "min": min(v), "max": max(v), "n": len(v)} for n, v in times.items()}}


def current_rss() -> int:
    """Resident set size of this process now, in bytes (Linux /proc/self/statm)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class RssSampler(threading.Thread):
    """Samples the resident set size every `interval` seconds; `.peak` is the largest seen.
    torch releases the GIL inside its kernels, so the sampler runs during the step."""

    def __init__(self, interval: float = 0.0005):
        super().__init__(daemon=True)
        self.interval, self.peak, self._stop_flag = interval, current_rss(), False

    def run(self) -> None:
        while not self._stop_flag:
            self.peak = max(self.peak, current_rss())
            time.sleep(self.interval)

    def stop(self) -> int:
        self._stop_flag = True
        self.join()
        self.peak = max(self.peak, current_rss())
        return self.peak


def measure_memory(name: str, args) -> dict:
    """Run in a fresh subprocess: how far the resident set grows above its level before the steps."""
    import gc

    import torch

    torch.set_num_threads(args.threads)
    texts, labels = make_inputs(args.batch, args.length)
    model, opt = build(name, args.length)
    batch = model.encode(texts)
    y = torch.tensor(labels)
    gc.collect()
    base = current_rss()
    maxrss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    sampler = RssSampler()
    sampler.start()
    for _ in range(3):
        step(name, model, opt, batch, y)
    peak = sampler.stop()
    maxrss_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {"rss_before_steps_mib": base / 2**20, "peak_rss_during_steps_mib": peak / 2**20,
            "step_peak_growth_mib": (peak - base) / 2**20,
            "ru_maxrss_growth_mib": (maxrss_after - maxrss_before) / 2**20}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--length", type=int, default=128)
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results"))
    ap.add_argument("--memory-child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    os.environ.setdefault("DIFFPROMPT_QUIET", "1")
    if args.memory_child:
        print(json.dumps(measure_memory(args.memory_child, args)))
        return
    import torch

    import diffprompt

    torch.set_num_threads(args.threads)
    load0 = os.getloadavg()
    t0 = time.time()
    timing = time_interleaved(args)
    memory = {}
    for n in VARIANTS:
        cmd = [sys.executable, __file__, "--memory-child", n, "--batch", str(args.batch), "--length", str(args.length),
               "--threads", str(args.threads)]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
        memory[n] = json.loads(out.strip().splitlines()[-1])
    from diffprompt.prompting import load_backbone

    bb, _ = load_backbone()
    V = bb.config.vocab_size
    B, L = args.batch, args.length
    logits_bytes = {"mask-only [B, V]": B * V * 4, "full-vocab [B, L, V]": B * L * V * 4}
    st = timing["step_seconds"]
    result = {
        "machine": {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
                    "cpu_count": os.cpu_count(), "torch": torch.__version__, "torch_threads": args.threads,
                    "diffprompt": diffprompt.__version__, "loadavg_start": load0, "loadavg_end": os.getloadavg(),
                    "note": "CPU shared with other jobs while measuring; the variants are interleaved so load hits them alike"},
        "backbone": "bert-tiny (packaged): 2 layers, hidden 128, vocab %d" % V,
        "batch": B, "length": L, "rounds": args.rounds, "warmup": args.warmup,
        "step_seconds": st, "memory": memory,
        "logits_tensor_mib": {k: v / 2**20 for k, v in logits_bytes.items()},
        "max_abs_diff_mask_vs_full": timing["max_abs_diff_mask_vs_full"],
        "ratios": {
            "full-vocab / prompt-ft time": st["full-vocab"]["median"] / st["prompt-ft"]["median"],
            "full-vocab / prompt-ft step memory": memory["full-vocab"]["step_peak_growth_mib"] / max(1e-9, memory["prompt-ft"]["step_peak_growth_mib"]),
            "prompt-ft / soft time": st["prompt-ft"]["median"] / st["soft"]["median"],
            "prompt-ft / soft step memory": memory["prompt-ft"]["step_peak_growth_mib"] / max(1e-9, memory["soft"]["step_peak_growth_mib"]),
            "soft-full-vocab / soft time": st["soft-full-vocab"]["median"] / st["soft"]["median"],
        },
        "seconds": round(time.time() - t0, 1),
    }
    r = result["ratios"]
    result["targets"] = {"prompt-ft >= 3x faster than full-vocab": r["full-vocab / prompt-ft time"] >= 3,
                         "prompt-ft lower peak memory than full-vocab": memory["prompt-ft"]["step_peak_growth_mib"] < memory["full-vocab"]["step_peak_growth_mib"]}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "prompting_speed.json").write_text(json.dumps(result, indent=2))
    m = result["machine"]
    lines = [
        f"Training step (forward + backward + AdamW), batch {B} x {L} tokens, packaged BERT-tiny, "
        f"{args.threads} torch thread(s), median of {args.rounds} interleaved rounds after {args.warmup} warm-up.",
        f"Machine: {m['processor']}, {m['cpu_count']} cores, {m['platform']}, torch {m['torch']}; load average "
        f"{m['loadavg_start'][0]:.1f} at start, {m['loadavg_end'][0]:.1f} at end (shared with other jobs).",
        "",
        "| variant | step time (ms) | step peak RSS growth (MiB) |",
        "| --- | ---: | ---: |",
    ]
    for n in VARIANTS:
        lines.append(f"| {n} | {1000 * st[n]['median']:.1f} | {memory[n]['step_peak_growth_mib']:.1f} |")
    lines += ["", f"- full-vocab / prompt-ft: **{r['full-vocab / prompt-ft time']:.1f}x** time, "
                  f"{r['full-vocab / prompt-ft step memory']:.1f}x step memory (target: >= 3x faster, lower memory: "
                  f"{'met' if all(result['targets'].values()) else 'NOT met'})",
              f"- prompt-ft / soft (frozen): {r['prompt-ft / soft time']:.1f}x time, {r['prompt-ft / soft step memory']:.1f}x step memory",
              f"- soft-full-vocab / soft: {r['soft-full-vocab / soft time']:.1f}x time",
              f"- logits tensor: mask-only {result['logits_tensor_mib']['mask-only [B, V]']:.1f} MiB vs full-vocab "
              f"{result['logits_tensor_mib']['full-vocab [B, L, V]']:.1f} MiB (float32; its gradient is as large again)",
              f"- the two paths agree: max |label score difference| = {result['max_abs_diff_mask_vs_full']:.2e}",
              "", "Memory: peak resident set size during 3 training steps (sampled every 0.5 ms by a thread) minus the "
              "level just before the first step, in a fresh process per variant; it counts activations, gradients "
              "and AdamW state."]
    (out / "prompting_speed.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
