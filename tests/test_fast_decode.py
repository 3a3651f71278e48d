"""The sampler's lean decode step gives the model's own logits (fp64), and sampling with it gives
the same completions as decoding through transformers' forward."""

import pytest
import torch
from hypothesis import given, settings, strategies as st

from helpers import tiny_arch
from unified_rl.hf.compat import output_cache
from unified_rl.hf.static_decoder import StaticDecoder, supports_fast_decode
from unified_rl.hf.sampling import generate


def _left_padded(prompts, pad=0):
    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), pad, dtype=torch.long)
    attn = torch.zeros((len(prompts), width), dtype=torch.bool)
    for i, p in enumerate(prompts):
        ids[i, width - len(p):] = torch.tensor(p)
        attn[i, width - len(p):] = True
    return ids, attn


def _reference_logits(model, rows):
    """Last-position logits of each full row (left-padded, positions from the mask), one plain forward."""
    ids, attn = _left_padded(rows)
    pos = (attn.long().cumsum(-1) - 1).clamp(min=0)
    return model(input_ids=ids, attention_mask=attn.long(), position_ids=pos).logits[:, -1]


def _prefilled(model, g, group, steps, fixed=False):
    """Three random left-padded prompts prefilled through transformers into a StaticDecoder with room
    for ``steps`` tokens: (decoder, each row's tokens so far, padded prompt width)."""
    prompts = [torch.randint(1, 23, (int(torch.randint(1, 6, (1,), generator=g)),), generator=g).tolist() for _ in range(3)]
    ids, attn = _left_padded(prompts)
    out = model(input_ids=ids, attention_mask=attn.long(), position_ids=(attn.long().cumsum(-1) - 1).clamp(min=0), use_cache=True)
    dec = StaticDecoder(model)
    dec.start(output_cache(out), attn, group, steps, fixed=fixed)
    return dec, [list(p) for p in prompts for _ in range(group)], ids.shape[1]


@given(seed=st.integers(0, 10_000), group=st.integers(1, 3), steps=st.integers(1, 6),
       kind=st.sampled_from(["llama", "qwen2", "qwen3", "mistral"]))
@settings(max_examples=25, deadline=None)
def test_static_decoder_logits_equal_the_models(seed, group, steps, kind):
    """Prefill through transformers, then decode ``steps`` tokens with the static cache, dropping
    a random subset of rows half-way: every step's logits == a full forward of each row (fp64)."""
    model = tiny_arch(kind)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        dec, rows, _ = _prefilled(model, g, group, steps)
        for step in range(steps):
            if step == steps // 2 and len(rows) > 1:  # finished samples leave the batch
                keep = torch.randperm(len(rows), generator=g)[: max(1, len(rows) // 2)].sort().values
                dec.keep(keep)
                rows = [rows[i] for i in keep.tolist()]
            tok = torch.randint(1, 23, (len(rows),), generator=g)
            rows = [r + [t] for r, t in zip(rows, tok.tolist())]
            logits = dec.step(tok, torch.tensor([len(r) - 1 for r in rows]))
            torch.testing.assert_close(logits, _reference_logits(model, rows), rtol=1e-12, atol=1e-12)
        with pytest.raises(RuntimeError, match="all used"):
            dec.step(tok, torch.tensor([len(r) for r in rows]))


@given(seed=st.integers(0, 10_000), group=st.integers(1, 3), steps=st.integers(1, 6), kind=st.sampled_from(["llama", "qwen2", "qwen3"]))
@settings(max_examples=15, deadline=None)
def test_fixed_shape_steps_equal_the_models(seed, group, steps, kind):
    """The fixed-shape step (every position allocated, the write position on the device: what a
    CUDA graph replays) gives the model's own logits too (fp64), and never grows its buffers."""
    model = tiny_arch(kind)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        dec, rows, width = _prefilled(model, g, group, steps, fixed=True)
        shape = dec.keys[0].shape
        for _ in range(steps):
            tok = torch.randint(1, 23, (len(rows),), generator=g)
            rows = [r + [t] for r, t in zip(rows, tok.tolist())]
            logits = dec.step(tok, torch.tensor([len(r) - 1 for r in rows]))
            torch.testing.assert_close(logits, _reference_logits(model, rows), rtol=1e-12, atol=1e-12)
        assert dec.keys[0].shape == shape and int(dec.position) == width + steps


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_graphed_decoding_samples_what_eager_decoding_samples():
    """On a GPU, decode steps replayed as a CUDA graph choose the same tokens with the same log-probs."""
    import unified_rl.hf.sampling as sampling

    model = tiny_arch("qwen2").float().cuda()
    prompts = [[1, 2, 3], [4, 5], [6, 7, 8, 9, 10]]
    out = {}
    for graphs in (True, False):
        sampling.CUDA_GRAPHS = graphs
        out[graphs] = generate(model, prompts, group_size=4, max_new_tokens=20, eos_id=-1, pad_id=0, greedy=True)
    sampling.CUDA_GRAPHS = True
    assert out[True].completion_ids == out[False].completion_ids
    for a, b in zip(out[True].logprobs, out[False].logprobs):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("greedy", [True, False])
@pytest.mark.parametrize("kind", ["llama", "qwen3"])
def test_generate_fast_and_transformers_decode_agree(kind, greedy):
    model = tiny_arch(kind)
    prompts = [[1, 2, 3], [4, 5], [6, 7, 8, 9, 10]]
    first = generate(model, prompts, group_size=3, max_new_tokens=12, eos_id=-1, pad_id=0, greedy=greedy,
                     generator=torch.Generator().manual_seed(0))
    eos = first.completion_ids[0][3]  # a token some row samples: rows finish at different steps
    out = {}
    for fast in (True, False):
        out[fast] = generate(model, prompts, group_size=3, max_new_tokens=12, eos_id=eos, pad_id=0, greedy=greedy,
                             generator=torch.Generator().manual_seed(0), fast_decode=fast)
    assert out[True].completion_ids == out[False].completion_ids
    assert any(len(c) < 12 for c in out[True].completion_ids)  # some rows finished early (and were dropped)
    for a, b in zip(out[True].logprobs, out[False].logprobs):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)  # recorded in fp32


def test_supported_architectures():
    assert supports_fast_decode(tiny_arch("llama")) and supports_fast_decode(tiny_arch("qwen3"))
    assert not supports_fast_decode(tiny_arch("gpt2"))
    windowed = tiny_arch("mistral")
    windowed.config.sliding_window = 4
    assert not supports_fast_decode(windowed)
