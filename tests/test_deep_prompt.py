"""Deep prompts (prefix tuning / P-tuning v2): key/value prefixes at every layer of a frozen masked LM.

On each masked-LM family the repository tests (the packaged BERT-tiny; tiny random RoBERTa,
DistilBERT, ELECTRA, ALBERT and DeBERTa-v3-style DeBERTa-v2 with two layers): every layer's
attention equals the attention over prefixed keys and values written out here in plain torch (for
DeBERTa with its relative-position terms on the input's columns only), and on BERT the whole
forward pass too; the backbone stays bitwise unchanged while the prefixes train, and only
they are saved; the MLP reparameterisation folds into plain prefixes. PEFT is the oracle for the
PREFIX_TUNING round trip on the families whose attention takes PEFT's cache (BERT, RoBERTa,
ELECTRA; in transformers 5.25 the attention of DistilBERT, ALBERT and DeBERTa-v2 takes no cache, so
PEFT 0.21.2 cannot prefix them).
"""

from __future__ import annotations

import copy
import json
import math

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from test_prompting_core import _roberta_tokenizer

from diffprompt.errors import UserError
from diffprompt.prompting.models.backbone import load_backbone
from diffprompt.prompting.models.deep_prompt import (
    DeepPrompt,
    DeepPromptConfig,
    flat_to_prefixes,
)
from diffprompt.prompting.peft_io import export_peft_prefix, import_peft_prefix

pytestmark = [pytest.mark.usefixtures("one_thread"),  # peft asks transformers deprecated questions:
              pytest.mark.filterwarnings("ignore:`is_gradient_checkpointing` is deprecated:FutureWarning"),
              pytest.mark.filterwarnings("ignore:`past_key_values` is deprecated:FutureWarning")]
FAMILIES = ["bert", "roberta", "distilbert", "electra", "albert", "deberta-v2"]
PEFT_FAMILIES = ["bert", "roberta", "electra"]
TEXTS = ["a gorgeous , witty , seductive movie . It was {mask} .", "dull . It was {mask} ."]


def family(name: str):
    """(masked LM in eval mode, tokenizer): the packaged BERT-tiny, or a tiny random model with 2 layers."""
    import transformers as tf

    bb, tok = load_backbone()
    if name == "bert":
        return bb, tok
    torch.manual_seed(0)
    common = {"num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 32, "max_position_embeddings": 160}
    if name == "roberta":
        tok = _roberta_tokenizer()
        model = tf.RobertaForMaskedLM(tf.RobertaConfig(
            vocab_size=len(tok), hidden_size=16, pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id,
            eos_token_id=tok.eos_token_id, **{**common, "max_position_embeddings": 130}))
    elif name == "distilbert":
        model = tf.DistilBertForMaskedLM(tf.DistilBertConfig(vocab_size=len(tok), dim=16, n_layers=2, n_heads=2,
                                                             hidden_dim=32, max_position_embeddings=160))
    elif name == "electra":
        model = tf.ElectraForMaskedLM(tf.ElectraConfig(vocab_size=len(tok), embedding_size=8, hidden_size=16, **common))
    elif name == "albert":  # one shared layer run twice: two prefixes
        model = tf.AlbertForMaskedLM(tf.AlbertConfig(vocab_size=len(tok), embedding_size=8, hidden_size=16, **common))
    elif name == "deberta-v2":  # DeBERTa-v3's attention: relative positions only, both position terms
        model = tf.DebertaV2ForMaskedLM(tf.DebertaV2Config(
            vocab_size=len(tok), hidden_size=16, legacy=False, relative_attention=True, pos_att_type=["p2c", "c2p"],
            position_buckets=8, max_relative_positions=32, share_att_key=True, position_biased_input=False,
            norm_rel_ebd="layer_norm", **common))
    return model.eval(), tok


def batch(tok) -> dict:
    """Two padded inputs with one mask each, and the mask positions."""
    enc = tok([t.format(mask=tok.mask_token) for t in TEXTS], return_tensors="pt", padding=True)
    return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"],
            "mask_positions": (enc["input_ids"] == tok.mask_token_id).nonzero()[:, 1]}


def random_prompt(bb, n: int = 3, mlp: int | None = None, seed: int = 1) -> DeepPrompt:
    """A deep prompt with prefixes of the size real keys and values have (not the small initial ones)."""
    torch.manual_seed(seed)
    prompt = DeepPrompt(bb, DeepPromptConfig(n, mlp))
    with torch.no_grad():
        for p in prompt.parameters():
            p.normal_()
    return prompt


def mask_logits(prompt: DeepPrompt, b: dict) -> torch.Tensor:
    with torch.no_grad():
        logits = prompt.run(b["attention_mask"], input_ids=b["input_ids"]).logits
    return logits[torch.arange(len(logits)), b["mask_positions"]]


# ---------------------------------------------------------------------------- plain-torch reference
def projections(module):
    """(query, key, value, after) of an attention module; `after(context, hidden)` is what the module
    does with the attention's output (BERT: nothing, DistilBERT: out_lin, ALBERT: dense + residual + LayerNorm)."""
    if hasattr(module, "query_proj"):
        return module.query_proj, module.key_proj, module.value_proj, lambda c, h: c
    if hasattr(module, "q_lin"):
        return module.q_lin, module.k_lin, module.v_lin, lambda c, h: module.out_lin(c)
    if hasattr(module, "dense"):
        return module.query, module.key, module.value, lambda c, h: module.LayerNorm(h + module.dense(c))
    return module.query, module.key, module.value, lambda c, h: c


def reference_attention(module, hidden, prefix, attention_mask, kwargs=None):
    """softmax(q [P_k; k]^T / sqrt(d) + mask) [P_v; v], the prefix always attended, written out.
    DeBERTa: d scaled by its number of score terms, and its relative-position terms (its own
    `disentangled_attention_bias`) added on the input's columns only."""
    q_lin, k_lin, v_lin, after = projections(module)
    heads, n, d = prefix.shape[1:]
    batch, length = hidden.shape[:2]
    split = lambda x: x.view(batch, length, heads, d).transpose(1, 2)  # [B, heads, L, d]
    q, k, v = split(q_lin(hidden)), split(k_lin(hidden)), split(v_lin(hidden))
    terms = 1 + sum(t in getattr(module, "pos_att_type", []) for t in ("c2p", "p2c"))
    scores = q @ torch.cat([prefix[0].expand(batch, -1, -1, -1), k], dim=2).transpose(-1, -2) / math.sqrt(d * terms)
    keep = torch.cat([torch.ones(batch, n), attention_mask.float()], dim=1)[:, None, None, :]
    if hasattr(module, "disentangled_attention_bias"):
        rel = module.disentangled_attention_bias(q.reshape(-1, length, d), k.reshape(-1, length, d),
                                                 kwargs["relative_pos"], kwargs["rel_embeddings"], terms)
        scores = scores + F.pad(rel.view(batch, heads, length, length), (n, 0))
        rows = attention_mask.float()[:, None, :, None]  # DeBERTa masks padded rows too, the prefix stays attended
        keep = torch.cat([torch.ones(batch, 1, length, n), rows * keep[..., n:]], dim=-1)
    scores = scores + (1 - keep) * -1e9
    context = scores.softmax(-1) @ torch.cat([prefix[1].expand(batch, -1, -1, -1), v], dim=2)
    return after(context.transpose(1, 2).reshape(hidden.shape), hidden)


def attention_calls(bb, prompt: DeepPrompt, b: dict) -> list:
    """(module, its input hidden states, its keyword arguments, its output) of every attention call
    of a prefixed forward."""
    calls, hooks = [], []
    for module in bb.modules():
        if any(hasattr(module, a) for a in ("query", "q_lin", "query_proj")):
            hooks.append(module.register_forward_hook(
                lambda m, args, kwargs, out: calls.append((m, args[0] if args else kwargs["hidden_states"], kwargs,
                                                           out[0])), with_kwargs=True))
    try:
        with torch.no_grad():
            prompt.run(b["attention_mask"], input_ids=b["input_ids"])
    finally:
        for h in hooks:
            h.remove()
    return calls


@pytest.mark.parametrize("name", FAMILIES)
def test_every_layer_attends_to_its_prefix_as_written_out(name):
    bb, tok = family(name)
    prompt, b = random_prompt(bb), batch(tok)
    implementation = bb.config._attn_implementation
    calls = attention_calls(bb, prompt, b)
    assert len(calls) == 2 == prompt.layers  # ALBERT: its one module twice, with prefix 0, then prefix 1
    with torch.no_grad():
        prefixes = prompt.prefixes()
        for i, (module, hidden, kwargs, out) in enumerate(calls):
            mine = reference_attention(module, hidden, prefixes[i], b["attention_mask"], kwargs)
            torch.testing.assert_close(out, mine, rtol=0, atol=1e-5)
            other = reference_attention(module, hidden, prefixes[1 - i], b["attention_mask"], kwargs)
            assert (out - other).abs().max() > 1e-3  # each layer gets its own prefix
    assert bb.config._attn_implementation == implementation  # the backbone is back as it was
    assert not any("forward" in vars(m) for m in bb.modules())
    with torch.no_grad():  # embeddings in (what PromptClassifier feeds) take the same positions as ids
        embeds = bb.get_input_embeddings()(b["input_ids"])
        from_embeds = prompt.run(b["attention_mask"], inputs_embeds=embeds).logits
        assert torch.equal(from_embeds, prompt.run(b["attention_mask"], input_ids=b["input_ids"]).logits)


def test_bert_mask_logits_equal_a_forward_pass_written_out():
    """The packaged BERT-tiny end to end: positions after the prefix, two post-LN layers, the MLM head."""
    bb, tok = family("bert")
    prompt, b = random_prompt(bb, n=4), batch(tok)
    emb, n = bb.bert.embeddings, prompt.num_virtual_tokens
    length = b["input_ids"].shape[1]
    with torch.no_grad():
        h = emb.word_embeddings(b["input_ids"]) + emb.token_type_embeddings.weight[0]
        h = emb.LayerNorm(h + emb.position_embeddings.weight[n:n + length])  # the input's positions start at N
        for layer, prefix in zip(bb.bert.encoder.layer, prompt.prefixes()):
            att = reference_attention(layer.attention.self, h, prefix, b["attention_mask"])
            h = layer.attention.output.LayerNorm(h + layer.attention.output.dense(att))
            ffn = layer.output.dense(F.gelu(layer.intermediate.dense(h)))
            h = layer.output.LayerNorm(h + ffn)
        ours = bb.cls(h)[torch.arange(2), b["mask_positions"]]
        encoder = prompt.run(b["attention_mask"], model=bb.bert, input_ids=b["input_ids"]).last_hidden_state
    torch.testing.assert_close(mask_logits(prompt, b), ours, rtol=0, atol=1e-5 * float(ours.abs().max()))
    torch.testing.assert_close(encoder, h, rtol=0, atol=1e-5)  # the encoder alone, as PromptClassifier calls it


# ---------------------------------------------------------------------------- training and files
@pytest.mark.parametrize("name", FAMILIES)
def test_training_moves_only_the_prefixes_and_saves_only_them(name, tmp_path):
    bb, tok = family(name)
    for p in bb.parameters():
        p.requires_grad_(False)
    before = {k: v.clone() for k, v in bb.state_dict().items()}
    prompt, b = DeepPrompt(bb, DeepPromptConfig(3)), batch(tok)
    start = prompt.prefix.detach().clone()
    opt = torch.optim.AdamW(prompt.parameters(), lr=1e-2)
    target = torch.tensor(tok.convert_tokens_to_ids(["great", "bad"]) if name != "roberta" else [5, 6])
    for _ in range(3):
        logits = prompt.run(b["attention_mask"], input_ids=b["input_ids"]).logits
        loss = F.cross_entropy(logits[torch.arange(2), b["mask_positions"]], target)
        opt.zero_grad()
        loss.backward()
        assert all(prompt.prefix.grad[i].abs().sum() > 0 for i in range(prompt.layers))  # every layer's prefix
        opt.step()
    assert not torch.equal(prompt.prefix.detach(), start)
    after = bb.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    assert list(prompt.state_dict()) == ["prefix"]
    prompt.save(tmp_path / "deep.safetensors")
    saved = load_file(tmp_path / "deep.safetensors")
    assert list(saved) == ["prefixes"] and saved["prefixes"].shape == (prompt.layers, 2, 2, 3, prompt.hidden // 2)
    back = DeepPrompt.load(tmp_path / "deep.safetensors", bb)
    assert torch.equal(mask_logits(back, b), mask_logits(prompt, b))


@pytest.mark.parametrize("name", ["bert", "albert", "deberta-v2"])
def test_the_mlp_folds_into_plain_prefixes(name, tmp_path):
    bb, tok = family(name)
    prompt, b = random_prompt(bb, n=3, mlp=24), batch(tok)
    assert sorted(prompt.state_dict()) == ["embedding", "mlp.0.bias", "mlp.0.weight", "mlp.2.bias", "mlp.2.weight"]
    folded = prompt.folded()
    assert list(folded.state_dict()) == ["prefix"] and folded.config.mlp_hidden_size is None
    with torch.no_grad():
        assert torch.equal(folded.prefix, prompt.prefixes())
    assert torch.equal(mask_logits(folded, b), mask_logits(prompt, b))
    prompt.save(tmp_path / "mlp.safetensors")
    assert list(load_file(tmp_path / "mlp.safetensors")) == ["prefixes"]  # the MLP is not saved
    assert torch.equal(mask_logits(DeepPrompt.load(tmp_path / "mlp.safetensors", bb), b), mask_logits(prompt, b))


def test_refusals(tmp_path):
    import transformers as tf

    mpnet = tf.MPNetForMaskedLM(tf.MPNetConfig(vocab_size=100, hidden_size=16, num_hidden_layers=2,
                                               num_attention_heads=2, intermediate_size=32))
    with pytest.raises(UserError, match="0 of its 2 attention layers took their prefix.*deep prompts need BERT"):
        DeepPrompt(mpnet)  # MPNet computes its attention with relative bias itself
    with pytest.raises(UserError, match="at least 1"):
        DeepPromptConfig(0)
    bert, _ = family("bert")
    roberta, _ = family("roberta")
    random_prompt(bert).save(tmp_path / "bert.safetensors")
    with pytest.raises(UserError, match="load them onto the backbone they were trained with"):
        DeepPrompt.load(tmp_path / "bert.safetensors", roberta)
    export_peft_prefix(random_prompt(bert), tmp_path / "adapter")
    with pytest.raises(UserError, match="load it onto the backbone it was trained with"):
        import_peft_prefix(tmp_path / "adapter", roberta)
    (tmp_path / "lora").mkdir()
    (tmp_path / "lora" / "adapter_config.json").write_text('{"peft_type": "LORA"}')
    with pytest.raises(UserError, match="holds a LORA adapter"):
        import_peft_prefix(tmp_path / "lora", bert)


# ---------------------------------------------------------------------------- PEFT as the oracle
def peft_mask_logits(bb, folder, b: dict) -> torch.Tensor:
    """PeftModel's masked-LM logits at the mask, the adapter loaded onto a copy of `bb`."""
    peft = pytest.importorskip("peft")
    model = peft.PeftModel.from_pretrained(copy.deepcopy(bb), str(folder)).eval()
    with torch.no_grad():
        logits = model(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits
    return logits[torch.arange(len(logits)), b["mask_positions"]]


@pytest.mark.parametrize("name,projection", [(name, False) for name in PEFT_FAMILIES] + [("bert", True)])
def test_a_peft_adapter_imports_with_peft_scores(name, projection, tmp_path):
    """projection: PEFT trains through its MLP and saves the prefixes it makes (folded, as we do)."""
    peft = pytest.importorskip("peft")
    bb, tok = family(name)
    config = peft.PrefixTuningConfig(task_type="FEATURE_EXTRACTION", num_virtual_tokens=4,
                                     prefix_projection=projection, encoder_hidden_size=24)
    model = peft.get_peft_model(copy.deepcopy(bb), config)
    with torch.no_grad():
        model.prompt_encoder["default"].embedding.weight.normal_(generator=torch.Generator().manual_seed(2))
    model.save_pretrained(str(tmp_path / "native"))
    b = batch(tok)
    theirs = peft_mask_logits(bb, tmp_path / "native", b)
    ours = mask_logits(import_peft_prefix(tmp_path / "native", bb), b)
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-5 * float(theirs.abs().max()))
    with torch.no_grad():
        plain = bb(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits
    assert (plain[torch.arange(2), b["mask_positions"]] - theirs).abs().max() > 1e-2  # the prefix matters


@pytest.mark.parametrize("name", PEFT_FAMILIES)
def test_an_exported_deep_prompt_gives_peft_our_scores(name, tmp_path):
    pytest.importorskip("peft")
    bb, tok = family(name)
    prompt, b = random_prompt(bb, n=3, mlp=20), batch(tok)  # exported folded
    export_peft_prefix(prompt, tmp_path / "adapter")
    config = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())
    assert config["peft_type"] == "PREFIX_TUNING" and config["num_virtual_tokens"] == 3
    assert config["prefix_projection"] is False and config["num_layers"] == prompt.layers
    theirs = peft_mask_logits(bb, tmp_path / "adapter", b)
    torch.testing.assert_close(mask_logits(prompt, b), theirs, rtol=0, atol=1e-5 * float(theirs.abs().max()))
    flat = load_file(tmp_path / "adapter" / "adapter_model.safetensors")["prompt_embeddings"]
    with torch.no_grad():
        assert torch.equal(flat_to_prefixes(flat, prompt.layers, prompt.heads), prompt.prefixes())
    back = import_peft_prefix(tmp_path / "adapter", bb)
    assert torch.equal(mask_logits(back, b), mask_logits(prompt, b))
