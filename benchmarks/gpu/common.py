"""Shared pieces of the GPU check: sizes (full or dry-run), a big-vocabulary tokenizer built locally,
random Qwen2 models, a random method batch, timing and gradient comparison."""

import time
import zlib
from dataclasses import dataclass

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from unified_rl import Rollout
from unified_rl.hf import build_qwen2, qwen2_config


@dataclass(frozen=True)
class Sizes:
    """Problem sizes: ``full`` on a GPU, ``dry`` (tiny, every path on CPU) for the tests."""

    big: dict                 # the Qwen2.5-0.5B-shaped model's config overrides ({} = the real shape)
    vocab_big: int            # its vocabulary (152k in full)
    head_tokens: int          # tokens in the head-memory comparison (8k in full)
    update_batch: int         # MFU: rows x (prompt + completion)
    update_prompt: int
    update_completion: int
    sampler_prompts: int      # samplers: prompts x G, new tokens
    sampler_group: int
    sampler_new: int
    grpo_questions: int       # GRPO vs TRL: questions x G, new tokens, rounds, steps per run (first is warm-up)
    grpo_group: int
    grpo_new: int
    grpo_rounds: int
    grpo_steps: int
    repeats: int
    pack_rows: int = 32          # packing: rows, longest completion, padded tokens per micro-batch
    pack_completion: int = 2048
    pack_max_tokens: int = 16384


FULL = Sizes(big={}, vocab_big=151_936, head_tokens=8192, update_batch=16, update_prompt=256, update_completion=768,
             sampler_prompts=8, sampler_group=8, sampler_new=256, grpo_questions=8, grpo_group=8, grpo_new=128, grpo_rounds=2,
             grpo_steps=3, repeats=3)
TINY_QWEN = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                 max_position_embeddings=512)
DRY = Sizes(big=TINY_QWEN, vocab_big=1024, head_tokens=64, update_batch=2, update_prompt=8, update_completion=16, sampler_prompts=2,
            sampler_group=2, sampler_new=8, grpo_questions=2, grpo_group=2, grpo_new=8, grpo_rounds=1, grpo_steps=2, repeats=1,
            pack_rows=6, pack_completion=24, pack_max_tokens=512)

SPECIALS = ("<pad>", "<eos>", "<bos>", "<unk>")


def word_tokenizer(vocab_size: int) -> PreTrainedTokenizerFast:
    """A word-level tokenizer over ``vocab_size`` ids ("<pad>", "<eos>", "<bos>", "<unk>", then "w4" ...),
    built locally, so a random model's every sampled id decodes to text."""
    vocab = {s: i for i, s in enumerate(SPECIALS)}
    vocab.update({f"w{i}": i for i in range(len(SPECIALS), vocab_size)})
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.decoder = decoders.WordPiece(prefix="##", cleanup=False)  # joins words with spaces
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="<eos>", bos_token="<bos>", unk_token="<unk>",
                                   clean_up_tokenization_spaces=False)
    fast.padding_side = "left"
    return fast


def prompt_rows(n: int, vocab_size: int, length: int = 16, seed: int = 0) -> list[dict]:
    """``n`` rows of random word prompts of ``length`` words, each with an answer column."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(len(SPECIALS), vocab_size, (n, length), generator=g)
    return [{"prompt": " ".join(f"w{i}" for i in row.tolist()), "answer": str(k % 2)} for k, row in enumerate(ids)]


def parity_reward(prompts, completions, **_):
    """A deterministic reward with spread inside every group: the parity of the completion's CRC32."""
    return [float(zlib.crc32(c.encode()) % 2) for c in completions]


def qwen(sizes: Sizes, device: str, dtype: torch.dtype = torch.float32, vocab: int = 0, seed: int = 0):
    """A random Qwen2 of the check's size (0.5B-shaped in full), built on ``device``."""
    cfg = qwen2_config(vocab or sizes.vocab_big, **sizes.big)
    cfg._attn_implementation = "sdpa"
    with torch.device(device):
        model = build_qwen2(cfg, seed=seed)
    return model.to(dtype)


def small_qwen(vocab: int = 512, seed: int = 0):
    """The correctness checks' model: a 2-layer width-128 Qwen2 with grouped-query attention (fp64, CPU)."""
    cfg = qwen2_config(vocab, hidden_size=128, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4,
                       num_key_value_heads=2, max_position_embeddings=256, tie_word_embeddings=False)
    cfg._attn_implementation = "sdpa"
    return build_qwen2(cfg, seed=seed).double().eval()


def method_batch(model, vocab: int, seed: int = 0, n_groups: int = 4, group_size: int = 2, prompt_max: int = 24,
                 completion_max: int = 48) -> Rollout:
    """Right-padded rows of random prompts and completions, groups of ``group_size`` (pairs), with
    every field some method reads: rewards, step rewards, chosen / rejected, truncation, KTO's
    mismatched rows (the second of each pair), and log pi_old / log pi_ref / a teacher's log pi near
    the model's own (so some tokens clip)."""
    g = torch.Generator().manual_seed(seed)
    b = n_groups * group_size
    p_len = torch.randint(1, prompt_max + 1, (b,), generator=g)
    c_len = torch.randint(1, completion_max + 1, (b,), generator=g)
    seq = int((p_len + c_len).max())
    ids = torch.randint(0, vocab, (b, seq), generator=g)
    pos = torch.arange(seq)[None]
    attn = pos < (p_len + c_len)[:, None]
    comp = (pos >= p_len[:, None]) & attn
    ids = torch.where(attn, ids, 0)
    r = Rollout(ids, attn, comp, group_ids=torch.arange(n_groups).repeat_interleave(group_size),
                rewards=torch.randint(0, 3, (b,), generator=g).double(), chosen=torch.arange(b) % 2 == 0, truncated=torch.arange(b) % 3 == 0)
    with torch.no_grad():
        logits = model(input_ids=ids, attention_mask=attn.long()).logits.double()
    lp = torch.log_softmax(logits[:, :-1], -1).gather(-1, ids[:, 1:, None]).squeeze(-1)
    lp = torch.cat([torch.zeros_like(lp[:, :1]), lp], 1)
    old = torch.where(comp, lp + 0.3 * torch.randn(lp.shape, generator=g, dtype=lp.dtype), 0.0)
    ref = torch.where(comp, lp + 0.3 * torch.randn(lp.shape, generator=g, dtype=lp.dtype), 0.0)
    teacher = torch.where(comp, lp + 0.5 * torch.randn(lp.shape, generator=g, dtype=lp.dtype), 0.0)
    last = comp & ~torch.cat([comp[:, 1:], torch.zeros_like(comp[:, :1])], 1)
    steps = (comp & (torch.rand(comp.shape, generator=g) < 0.3)) | last
    return r.replace(old_logprobs=old, ref_logprobs=ref, teacher_logprobs=teacher, kl_sample=torch.arange(b) % 2 == 1, step_mask=steps,
                     step_rewards=torch.where(steps, torch.randint(0, 2, comp.shape, generator=g).double(), 0.0))


def rel_error(got: list[torch.Tensor], want: list[torch.Tensor]) -> float:
    """||got - want|| / ||want|| over all tensors together (got cast to fp64 on the CPU)."""
    num = sum(float((a.detach().double().cpu() - b).pow(2).sum()) for a, b in zip(got, want))
    den = sum(float(b.pow(2).sum()) for b in want)
    return (num / den) ** 0.5 if den > 0 else float("inf")


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def timed(fn, device: str) -> float:
    sync(device)
    t = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - t


def peak_gib(device: str) -> float:
    return torch.cuda.max_memory_allocated() / 2**30 if device == "cuda" else float("nan")


def reset_peak(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
