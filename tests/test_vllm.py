"""The vLLM sampler against a real vLLM engine (runs where vLLM installs: .ci/run's second virtual
environment, ``unified_rl[vllm-cpu]``; skipped elsewhere). One engine is shared by every test
(start-up takes tens of seconds): the policies differ in weights only, which the sampler syncs."""

import json
import os

import pytest
import torch

if os.environ.get("UNIFIED_RL_REQUIRE_VLLM"):  # .ci/run's vLLM environment: a broken install fails, never skips
    import vllm  # noqa: F401
else:
    pytest.importorskip("vllm")

import unified_rl as url  # noqa: E402
import unified_rl.coefficients as C  # noqa: E402
from unified_rl.apps.tasks import ArithmeticTask, char_tokenizer  # noqa: E402
from unified_rl.config import TrainConfig  # noqa: E402
from unified_rl.hf import add_lora, completion_logprobs, tiny_llama  # noqa: E402
from unified_rl.hf.vllm_sampler import VLLMSampler  # noqa: E402
from unified_rl.loop import Trainer  # noqa: E402

TOK = char_tokenizer()
ROWS = ArithmeticTask().train_rows(32)
TOL = 2e-5  # fp32: vLLM's kernels against transformers' forward (measured about 5e-7)
pytestmark = pytest.mark.filterwarnings("default::FutureWarning", "default::DeprecationWarning")  # vLLM's own, not ours


def policy(seed: int) -> torch.nn.Module:
    return tiny_llama(len(TOK), hidden=64, layers=2, heads=2, intermediate=128, seed=seed).float()


@pytest.fixture(scope="module")
def sampler():
    return VLLMSampler(TOK.eos_token_id, TOK.pad_token_id, max_model_len=128)


PROMPTS = [TOK.encode("12+7=")[:5], TOK.encode("3*4+2=")[:6], TOK.encode("9-5=")[:4]]


def own_logprobs(model, generated, temperature):
    """The policy's own log-probs of each sampled completion (transformers' forward)."""
    out = []
    for p, c in zip(generated.prompt_ids, generated.completion_ids):
        ids = torch.tensor([p + c])
        completion = torch.zeros_like(ids, dtype=torch.bool)
        completion[0, len(p):] = True
        with torch.no_grad():
            out.append(completion_logprobs(model, ids, torch.ones_like(completion), completion, temperature=temperature)[0, len(p):])
    return out


def gap(a, b) -> float:
    return max(float((x - y).abs().max()) for x, y in zip(a, b))


def test_groups_eos_and_a_repeatable_draw(sampler):
    model = policy(0)
    g = sampler.sample(model, PROMPTS, 4, 12, 1.0, torch.Generator().manual_seed(5))
    assert g.prompt_ids == [list(p) for p in PROMPTS for _ in range(4)]  # n = G per prompt, prompt-major
    for c, lp in zip(g.completion_ids, g.logprobs):
        assert 1 <= len(c) <= 12 and len(lp) == len(c) and (len(c) == 12 or c[-1] == TOK.eos_token_id)
        assert TOK.eos_token_id not in c[:-1] and bool((lp <= 0).all())
    again = sampler.sample(model, PROMPTS, 4, 12, 1.0, torch.Generator().manual_seed(5))
    assert again.completion_ids == g.completion_ids  # each prompt's seed comes from the caller's generator
    other = sampler.sample(model, PROMPTS, 4, 12, 1.0, torch.Generator().manual_seed(6))
    assert other.completion_ids != g.completion_ids


def test_greedy_matches_the_policy_and_draws_nothing(sampler):
    """Temperature 0 (greedy evaluation, no generator): the policy's own argmax tokens, and torch's
    global RNG is left as it was (as with the other samplers)."""
    model = policy(3)
    state = torch.get_rng_state()
    g = sampler.sample(model, PROMPTS, 1, 10, 0.0, None)
    assert torch.equal(torch.get_rng_state(), state)
    with torch.no_grad():
        for p, c in zip(g.prompt_ids, g.completion_ids):
            ids = torch.tensor([p + c])
            argmax = model(ids).logits[0, len(p) - 1:-1].argmax(-1).tolist()
            assert argmax == c


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_engine_logprobs_follow_the_policy_weights(sampler, temperature):
    """The engine's log-probs are the policy's own (fp32, TOL); after the policy changes, the next
    call syncs the new weights and the engine's log-probs follow them."""
    model = policy(1)
    g = sampler.sample(model, PROMPTS, 3, 10, temperature, torch.Generator().manual_seed(0))
    before = own_logprobs(model, g, temperature)
    assert gap(g.logprobs, before) < TOL
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    syncs = sampler.syncs
    h = sampler.sample(model, PROMPTS, 3, 10, temperature, torch.Generator().manual_seed(1))
    assert sampler.syncs == syncs + 1
    assert gap(h.logprobs, own_logprobs(model, h, temperature)) < TOL
    stale = own_logprobs(policy(1), h, temperature)  # the weights before the change
    assert gap(h.logprobs, stale) > 100 * TOL


def test_sync_every_keeps_the_engine_weights_between_syncs(sampler):
    model = policy(2)
    sampler.sync_every, sampler.calls = 2, 0
    try:
        sampler.sample(model, PROMPTS, 2, 8, 1.0, torch.Generator().manual_seed(0))  # call 0: syncs
        old = policy(2)
        with torch.no_grad():
            for p in model.parameters():
                p.mul_(1.5)
        g = sampler.sample(model, PROMPTS, 2, 8, 1.0, torch.Generator().manual_seed(1))  # call 1: no sync
        assert gap(g.logprobs, own_logprobs(old, g, 1.0)) < TOL
        g = sampler.sample(model, PROMPTS, 2, 8, 1.0, torch.Generator().manual_seed(2))  # call 2: syncs
        assert gap(g.logprobs, own_logprobs(model, g, 1.0)) < TOL
    finally:
        sampler.sync_every = 1


def test_a_lora_policy_is_synced_with_its_adapters_folded_in(sampler):
    model = add_lora(policy(3), r=4, targets="all-linear")
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.copy_(0.1 * torch.randn_like(p))
    g = sampler.sample(model, PROMPTS, 2, 10, 1.0, torch.Generator().manual_seed(0))
    assert gap(g.logprobs, own_logprobs(model, g, 1.0)) < TOL
    with url.hf.adapters_off(model):
        base = own_logprobs(model, g, 1.0)
    assert gap(g.logprobs, base) > 100 * TOL  # the adapters count


def test_grpo_trains_with_vllm_and_logs_the_mismatch(sampler, tmp_path):
    """``sampler: vllm`` is all that changes: the method gains the TIS correction (auto), the
    Trainer recomputes pi_old, and the step's log shows the mismatch."""
    cfg = TrainConfig(steps=2, questions_per_step=4, max_new_tokens=8, sampler="vllm",
                      checkpoint_every=0, out_dir=str(tmp_path))
    trainer = Trainer(policy(4), TOK, url.methods.grpo(group_size=4), ROWS, cfg, reward=url.rewards.FromCallable(
        lambda prompts, completions, **_: [float("7" in c) for c in completions]), sampler=sampler)
    assert [type(t).__name__ for t in trainer.coefficient.terms] == ["Corrected", "KL"]
    before = set(os.environ)
    history = trainer.run(progress=False)
    steps = [m for m in history if "loss" in m]
    assert len(steps) == 2
    for m in steps:
        assert 0 <= m["mismatch/logp_diff_mean"] <= m["mismatch/logp_diff_max"] < 1e-4  # fp32 engines agree closely
        assert m["mismatch/frac_corrected"] == 0.0 and abs(m["mismatch/kl_sampler_trainer"]) < 1e-6
    lines = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert all("mismatch/logp_diff_max" in m for m in lines if "loss" in m)
    assert isinstance(trainer.coefficient.terms[0].correction, C.correction.SamplerCorrection)
    ours = ("VLLM_ENABLE_V1_MULTIPROCESSING", "VLLM_LOGGING_LEVEL", "VLLM_CPU_OMP_THREADS_BIND")  # what the sampler sets to start vLLM
    assert not [k for k in ours if k in os.environ and k not in before]  # ... only while the engine starts


def test_torchrun_fsdp2_ranks_each_sample_with_their_own_engine(tmp_path):
    """Under torchrun (FSDP2, gloo) each rank's engine joins the job (external launcher) and gets
    the gathered whole weights: its log-probs are pi_old's to float rounding on every step."""
    import subprocess
    import sys

    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "unified_rl.apps.cli", "train",
           "--method", "grpo", "--sampler", "vllm", "--steps", "2", "--questions-per-step", "4", "--group-size", "4",
           "--max-new-tokens", "8", "--eval-size", "8", "--checkpoint-every", "0", "--out", "run", "--no-progress"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=tmp_path, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    steps = [m for m in map(json.loads, (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()) if "loss" in m]
    assert len(steps) == 2 and all(m["mismatch/logp_diff_max"] < 1e-4 for m in steps)


TRUNCATED = r"""
import sys, torch
from unified_rl.apps.tasks import char_tokenizer
from unified_rl.hf import completion_logprobs, tiny_llama
from unified_rl.hf.sampling import truncated
from unified_rl.hf.vllm_sampler import VLLMSampler
tok = char_tokenizer()
model = tiny_llama(len(tok), hidden=64, layers=2, heads=2, intermediate=128, seed=1).float()
s = VLLMSampler(tok.eos_token_id, tok.pad_token_id, max_model_len=128, top_k=3, top_p=0.9)
prompts = [tok.encode("12+7=")[:5], tok.encode("3*4+2=")[:6]]
g = s.sample(model, prompts, 4, 10, 1.0, torch.Generator().manual_seed(0))
worst, outside, mass = 0.0, 0, []
for p, c, lp in zip(g.prompt_ids, g.completion_ids, g.logprobs):
    ids = torch.tensor([p + c])
    with torch.no_grad():
        full = torch.log_softmax(model(input_ids=ids).logits[0, len(p) - 1:-1].double(), -1)
    own = full.gather(1, torch.tensor(c)[:, None]).squeeze(1)
    worst = max(worst, float((own - lp.double()).abs().max()))
    keep = truncated(full, 3, 0.9) > 0
    outside += int((~keep.gather(1, torch.tensor(c)[:, None])).sum())
    mass += full.exp().masked_fill(~keep, 0).sum(-1).log().abs().tolist()
print(f"RESULT {worst} {outside} {sum(mass) / len(mass)}")
"""


def test_truncated_sampling_records_whole_vocabulary_logprobs(tmp_path):
    """top_k / top_p under vLLM (its own engine, in a fresh process): every token from the kept set, and
    the recorded log-prob is the policy's over the whole vocabulary (not renormalised over the kept tokens)."""
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-c", TRUNCATED], capture_output=True, text=True, timeout=900, cwd=tmp_path)
    line = next((x for x in proc.stdout.splitlines() if x.startswith("RESULT")), None)
    assert line is not None, proc.stderr[-3000:]
    worst, outside, log_mass = line.split()[1:]
    assert float(worst) < TOL and int(outside) == 0 and float(log_mass) > 0.05, line


def test_truncated_sampling_at_another_temperature_is_refused():
    s = VLLMSampler(TOK.eos_token_id, TOK.pad_token_id, top_k=5)
    with pytest.raises(ValueError, match="temperature 0.7 with top_k/top_p"):
        s.sample(policy(0), PROMPTS, 2, 4, 0.7, torch.Generator().manual_seed(0))


def test_episodes_are_sampled_turn_by_turn_from_exactly_the_ids_so_far(sampler):
    """Multi-turn episodes with the vLLM sampler: a policy taught to end its answers (a few SFT steps)
    plays 3-turn episodes; at every model token, vLLM's log-prob equals the policy's own on the
    rollout's ids, so each turn was sampled from exactly the ids before it (prompt, earlier turns and
    the environment's tokens, never re-rendered)."""
    from unified_rl.data import Encoder
    from unified_rl.environments import Environment, EpisodeSource, Limits, Reply

    class Semicolons(Environment):
        def step(self, turn):
            return Reply(done=True) if turn.index >= 2 else Reply(text=";" * (1 + 3 * turn.index))

        def reward(self):
            return 1.0

    model = policy(5)
    Trainer(model, TOK, url.methods.sft(), ROWS, TrainConfig(steps=40, questions_per_step=16, lr=3e-3, max_new_tokens=48,
                                                              checkpoint_every=0)).run(progress=False)
    src = EpisodeSource(ROWS, Encoder(TOK, 32, 25), sampler, Semicolons, samples_per_question=2, max_new_tokens=24,
                        limits=Limits(max_turns=3, max_tokens=90))
    r = src.sample(model, 4)
    assert src.metrics()["env/turns"] >= 1.5, "the episodes must have several turns"
    with torch.no_grad():
        own = completion_logprobs(model, r.input_ids, r.attention_mask, r.completion_mask)
    m = r.completion_mask
    assert float((own[m] - r.sampler_logprobs[m]).abs().max()) < TOL


def test_a_rollout_worker_runs_its_own_engine(tmp_path):
    """--async-staleness with --sampler vllm: the engine lives in the worker process and takes each
    version's weights through vLLM's reload_weights. On the first batch (sampled by version 0, as the
    learner's pi_old) vLLM's log-probs are pi_old's to float rounding; later batches lag at most K."""
    import subprocess
    import sys

    cmd = [sys.executable, "-m", "unified_rl.apps.cli", "train", "--method", "grpo", "--sampler", "vllm", "--async-staleness", "1",
           "--steps", "3", "--questions-per-step", "4", "--group-size", "4", "--max-new-tokens", "8", "--eval-size", "8",
           "--checkpoint-every", "0", "--out", "run", "--no-progress"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=tmp_path, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    steps = [m for m in map(json.loads, (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()) if "loss" in m]
    assert len(steps) == 3 and all(0 <= m["async/staleness"] <= 1 for m in steps)
    assert steps[0]["async/staleness"] == 0 and steps[0]["mismatch/logp_diff_max"] < 1e-4
