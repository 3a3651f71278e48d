"""Terms over the vocabulary: the closed-form C is the gradient of j (fp64, hypothesis); the
engine's chunked pass gives the gradient of sum_t w_t j_t computed from full logits by autograd,
for a transformers model and a plain module, whatever the micro-batch and chunk sizes; the
distillation term equals TRL's own GKD and DistillationTrainer losses in fp64."""

import pytest
import torch
from hypothesis import given, strategies as st

import unified_rl as url
import unified_rl.coefficients as C
from helpers import random_rollout, tiny_model

REL = 1e-10
TERMS = {
    "forward_kl": lambda: C.jsd(0.0), "reverse_kl": lambda: C.jsd(1.0), "jsd": lambda: C.jsd(0.3),
    "entropy": lambda: C.entropy_bonus(0.2), "kl_full": lambda: C.kl_full(0.5),
}


@given(seed=st.integers(0, 10_000), name=st.sampled_from(sorted(TERMS)), beta=st.floats(0.01, 0.99))
def test_the_coefficient_is_the_gradient_of_j_through_the_softmax(seed, name, beta):
    """d(sum w j(log_softmax z))/dz = w (C - pi sum_v C): the identity the engine's pass relies on."""
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(6, 13, generator=g, dtype=torch.float64).mul_(3).requires_grad_(True)
    other = torch.log_softmax(torch.randn(6, 13, generator=g, dtype=torch.float64) * 3, -1)
    w = torch.rand(6, generator=g, dtype=torch.float64)
    term = C.jsd(beta) if name == "jsd" else TERMS[name]()
    others = {"teacher": other, "reference": other}
    (grad,) = torch.autograd.grad((w * term.objective(torch.log_softmax(z, -1), others)).sum(), z)
    logp = torch.log_softmax(z.detach(), -1)
    c = term.coefficient(logp, others)
    torch.testing.assert_close(grad, w[:, None] * (c - logp.exp() * c.sum(-1, keepdim=True)), rtol=1e-10, atol=1e-14)
    assert grad.abs().max() > 1e-8


def _flat(model):
    return torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1) for p in model.parameters()])


def _by_autograd(model, r, term, others_models):
    """sum_t w_t j_t from the full logits of every model, differentiated by autograd."""
    def logp_of(m):
        logits = m(input_ids=r.input_ids, attention_mask=r.attention_mask.long()).logits
        return torch.log_softmax(logits[:, :-1][r.completion_mask[:, 1:]].double() / r.temperature, -1)

    with torch.no_grad():
        others = {k: logp_of(m) for k, m in others_models.items()}
    model.zero_grad(set_to_none=True)
    w = r.weights[:, 1:][r.completion_mask[:, 1:]]
    (-(w * term.objective(logp_of(model), others)).sum()).backward()
    return _flat(model)


@pytest.mark.parametrize("name", sorted(TERMS))
@pytest.mark.parametrize("max_tokens,chunk_bytes", [(None, None), (9, 4 * 40 * 3), (1000, 4 * 40)])
def test_the_engine_pass_is_the_gradient_of_the_objective(name, max_tokens, chunk_bytes):
    model, teacher = tiny_model(1), tiny_model(2)
    r = random_rollout(3, n_groups=3, group_size=2, completion_max=7).replace(temperature=0.9)
    term = TERMS[name]()
    coef = C.chain(None, aggregation=C.token_mean(), vocabulary=(term,), name=name)
    r = coef.prepare(r)
    models = {"teacher": teacher, "reference": teacher}
    model.zero_grad(set_to_none=True)
    stats = url.engine.backward(model, r, coef, url.engine.ExecutionPlan(max_tokens=max_tokens, chunk_bytes=chunk_bytes), models=models)
    ours = _flat(model)
    theirs = _by_autograd(model, r, term, {k: models[k] for k in term.reads})
    assert theirs.norm() > 1e-6
    assert float((ours - theirs).norm() / theirs.norm()) < REL
    assert set(stats.metrics) >= {f"{term.name}/mean", "loss"}


def test_a_sampled_term_and_a_vocabulary_term_add_up():
    """GRPO with an entropy bonus: the engine's gradient is the sum of the two passes' gradients."""
    model = tiny_model(4)
    r = random_rollout(5, n_groups=2, group_size=3, completion_max=6)
    r = r.replace(rewards=torch.arange(r.batch_size, dtype=torch.float32) % 2, old_logprobs=torch.zeros(r.input_ids.shape))
    grpo = C.chain(C.group_normalized(), C.policy_gradient(), aggregation=C.token_mean())
    both = C.chain(C.group_normalized(), C.policy_gradient(), aggregation=C.token_mean(), vocabulary=(C.entropy_bonus(0.3),))
    bonus = C.chain(None, aggregation=C.token_mean(), vocabulary=(C.entropy_bonus(0.3),))
    grads = []
    for coef in (grpo, bonus, both):
        model.zero_grad(set_to_none=True)
        url.engine.backward(model, coef.prepare(r), coef)
        grads.append(_flat(model))
    torch.testing.assert_close(grads[2], grads[0] + grads[1], rtol=1e-12, atol=1e-15)
    assert grads[1].norm() > 1e-6


def test_a_plain_module_gives_the_same_gradient():
    class Plain(torch.nn.Module):  # a module that returns logits: the engine's plain adapter
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, input_ids, attention_mask, position_ids):
            return self.inner(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids).logits

    hf = tiny_model(6)
    r = random_rollout(7, n_groups=2, group_size=2)
    coef = C.chain(None, aggregation=C.sequence_mean(), vocabulary=(C.jsd(0.5),))
    r = coef.prepare(r)
    grads = []
    for model in (hf, Plain(hf)):
        hf.zero_grad(set_to_none=True)
        url.engine.backward(model, r, coef, models={"teacher": tiny_model(8)})
        grads.append(_flat(hf))
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-10, atol=1e-14)


def test_a_missing_teacher_is_named():
    coef = C.chain(None, aggregation=C.token_mean(), vocabulary=(C.jsd(0.5),))
    r = coef.prepare(random_rollout(1))
    with pytest.raises(ValueError, match=r"jsd\(beta=0.5\) reads the teacher's distribution, but no 'teacher' model was given"):
        url.engine.backward(tiny_model(0), r, coef)


@pytest.mark.parametrize("beta", [0.0, 0.5, 1.0])
def test_distillation_matches_trl_gkd_and_distillation_trainer(beta):
    """TRL's ``GKDTrainer.generalized_jsd_loss`` (labels masking the prompt: a token mean) in fp64 to
    ``REL``, and ``distillation_trainer._chunked_divergence_loss`` on the same batch, whose CPU path
    multiplies its tiles in fp32 (``kernels/chunked_divergence.py``), to 1e-5."""
    from trl.experimental.gkd.gkd_trainer import GKDTrainer
    from trl.trainer.distillation_trainer import _chunked_divergence_loss

    model, teacher = tiny_model(9), tiny_model(10)
    r = random_rollout(11, n_groups=2, group_size=3, completion_max=7)
    coef = C.chain(None, aggregation=C.token_mean(), vocabulary=(C.jsd(beta),))
    model.zero_grad(set_to_none=True)
    stats = url.engine.backward(model, coef.prepare(r), coef, models={"teacher": teacher})
    ours = _flat(model)

    labels = torch.where(r.completion_mask, r.input_ids, -100)[:, 1:]
    model.zero_grad(set_to_none=True)
    student = model(input_ids=r.input_ids, attention_mask=r.attention_mask.long()).logits[:, :-1]
    with torch.no_grad():
        teacher_logits = teacher(input_ids=r.input_ids, attention_mask=r.attention_mask.long()).logits[:, :-1]
    gkd_loss = GKDTrainer.generalized_jsd_loss(student, teacher_logits, labels=labels, beta=beta)
    gkd_loss.backward()
    assert stats.loss == pytest.approx(float(gkd_loss), rel=1e-10)  # the engine reports -J: the divergence itself
    gkd = _flat(model)
    assert gkd.norm() > 1e-6 and float((ours - gkd).norm() / gkd.norm()) < REL

    model.zero_grad(set_to_none=True)
    hidden = model.model(input_ids=r.input_ids, attention_mask=r.attention_mask.long()).last_hidden_state[:, :-1]
    with torch.no_grad():
        t_hidden = teacher.model(input_ids=r.input_ids, attention_mask=r.attention_mask.long()).last_hidden_state[:, :-1]
    loss, _, _ = _chunked_divergence_loss(hidden, t_hidden, model.lm_head.weight, teacher.lm_head.weight, r.completion_mask[:, 1:].long(), beta)
    loss.backward()
    distill = _flat(model)
    assert distill.norm() > 1e-6 and float((ours - distill).norm() / distill.norm()) < 1e-5


def test_the_memory_benchmark_runs_at_a_tiny_size():
    """benchmarks/vocabulary_memory.py end to end (three processes) at a tiny size: its table has
    every variant and the three gradients agree (fp32)."""
    import os
    import subprocess
    import sys

    script = os.path.join(os.path.dirname(__file__), "..", "benchmarks", "vocabulary_memory.py")
    out = subprocess.run([sys.executable, script, "--vocab", "300", "--rows", "2", "--completion", "12", "--hidden", "32", "--device", "cpu"],
                         capture_output=True, text=True, timeout=300, check=True).stdout
    rows = [line.split("|")[1:-1] for line in out.splitlines() if line.startswith("| 300 |")]
    assert [r[1].strip() for r in rows] == ["unified_rl engine (chunked)", "naive full logits", "TRL GKD loss (full logits)"]
    assert all(float(r[5]) < 1e-4 for r in rows)


def test_the_entropy_bonus_is_a_token_mean_whatever_the_chain_s_weights():
    """TRL's ``entropy_coef``: loss - coef * (sum of per-token entropies / tokens), not rescaled to the
    loss type's normaliser: under a sequence-mean chain the bonus is still a token mean."""
    model = tiny_model(12)
    r = random_rollout(13, n_groups=2, group_size=3, completion_max=7)
    coef = C.chain(None, aggregation=C.sequence_mean(), vocabulary=(C.entropy_bonus(0.3),))
    model.zero_grad(set_to_none=True)
    stats = url.engine.backward(model, coef.prepare(r), coef)
    ours = _flat(model)
    model.zero_grad(set_to_none=True)
    logits = model(input_ids=r.input_ids, attention_mask=r.attention_mask.long()).logits[:, :-1][r.completion_mask[:, 1:]]
    logp = torch.log_softmax(logits, -1)
    entropy = -(logp.exp() * logp).sum(-1)
    (-0.3 * entropy.mean()).backward()
    theirs = _flat(model)
    assert float((ours - theirs).norm() / theirs.norm()) < REL
    assert stats.metrics["entropy/exact"] == pytest.approx(float(entropy.mean()), rel=1e-10)


def test_the_adaptive_entropy_coefficient_follows_trl_s_controller():
    """Skywork-OR1 / TRL ``use_adaptive_entropy``: applied only while the last entropy is at or below
    the target; after each update the coefficient steps up (entropy <= target) or down, clamped; its
    state is checkpointed with the chain."""
    model = tiny_model(14)
    r = random_rollout(15, n_groups=2, group_size=2)
    coef = C.chain(None, aggregation=C.token_mean(), vocabulary=(C.entropy_bonus(0.02, target=100.0, delta=0.01, coef_max=0.035),))
    bonus = coef.vocabulary[0]
    seen = []
    for _ in range(3):  # the entropy (about log 97 = 4.6 nats) is under the target: up by delta, up to coef_max
        stats = url.engine.backward(model, coef.prepare(r), coef)
        seen.append(stats.metrics["entropy_bonus/coef"])
    assert seen == pytest.approx([0.03, 0.035, 0.035])
    state = coef.state_dict()
    high = C.chain(None, aggregation=C.token_mean(), vocabulary=(C.entropy_bonus(0.02, target=1.0, delta=0.01),))
    url.engine.backward(model, high.prepare(r), high)  # over the target: down, and the next update applies no bonus
    assert high.vocabulary[0].coef == pytest.approx(0.01)
    model.zero_grad(set_to_none=True)
    url.engine.backward(model, high.prepare(r), high)
    assert _flat(model).abs().max() == 0
    fresh = C.chain(None, aggregation=C.token_mean(), vocabulary=(C.entropy_bonus(0.02, target=100.0, delta=0.01, coef_max=0.035),))
    fresh.load_state_dict(state)
    assert fresh.vocabulary[0].coef == 0.035 and fresh.vocabulary[0].last_entropy == bonus.last_entropy


def test_a_teacher_of_another_tokenizer_or_a_method_without_one_is_one_line(tmp_path, capsys):
    from unified_rl.apps.cli import main
    from unified_rl.apps.tasks import chat_tokenizer
    from unified_rl.hf import save_model, tiny_llama

    tok = chat_tokenizer()
    save_model(tiny_llama(len(tok), hidden=32, layers=1, heads=2, intermediate=64), tok, str(tmp_path / "t"))
    base = ["train", "--teacher", str(tmp_path / "t"), "--steps", "1", "--no-progress"]
    assert main(base + ["--method", "gkd", "--out", str(tmp_path / "a")]) == 2
    err = capsys.readouterr().err
    assert "the teacher's tokenizer differs from the student's: token '\\n' is absent in the student's and id" in err
    assert main(base + ["--method", "grpo", "--out", str(tmp_path / "b")]) == 2
    assert "--teacher: --method grpo follows no teacher" in capsys.readouterr().err
    assert not (tmp_path / "a" / "metrics.jsonl").exists() and not (tmp_path / "b" / "metrics.jsonl").exists()


def test_the_sampled_path_benchmark_runs():
    """benchmarks/sampled_path.py end to end at a tiny size, against the checkout's own HEAD: its
    table has both rows and the two gradients are bitwise equal."""
    import os
    import subprocess
    import sys

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    if not os.path.isdir(os.path.join(root, ".git")):
        pytest.skip("needs the git checkout (git archive of a revision)")
    done = subprocess.run([sys.executable, os.path.join(root, "benchmarks", "sampled_path.py"), "--before", "HEAD", "--rounds", "1",
                           "--steps", "1", "--vocab", "300"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "| before: HEAD |" in done.stdout and "gradients bitwise equal: True" in done.stdout
