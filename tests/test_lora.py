"""LoRA through real PEFT: gradients reach only the adapters and equal autograd through PEFT's own
forward; the reference is the base model (adapters off, no copy); the samplers sample the adapted
model; a resumed LoRA run is bitwise; a merged export loads with from_pretrained."""

import copy

import pytest
import torch
from safetensors.torch import load_file

peft = pytest.importorskip("peft")

from transformers import AutoModelForCausalLM  # noqa: E402

from helpers import random_rollout, run_cli, shared_prompt_rollout, tiny_model, true_logprobs  # noqa: E402
from helpers import ROWS, TOK, has_seven, small_model  # noqa: E402
from unified_rl import engine, methods  # noqa: E402
from unified_rl.config import TrainConfig  # noqa: E402
from unified_rl.hf import Reference, add_lora, merged, save_model  # noqa: E402
from unified_rl.hf.prefix import plan_shared_prefix  # noqa: E402
from unified_rl.hf.sampling import generate  # noqa: E402
from unified_rl.loop import Trainer  # noqa: E402
from unified_rl.rewards import FromCallable  # noqa: E402


def lora_model(seed=0, r=4):
    """A tiny fp64 model with LoRA adapters whose B is random (so the adapters change the model)."""
    model = add_lora(tiny_model(seed), r=r, alpha=2 * r)
    g = torch.Generator().manual_seed(seed + 7)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.copy_(0.3 * torch.randn(p.shape, generator=g, dtype=p.dtype))
    return model.eval()


def test_gradients_reach_only_the_adapters_and_equal_autograd_through_peft():
    model = lora_model()
    rollout = random_rollout(3, n_groups=2, group_size=3)
    coef = methods.grpo(beta=0.0).coefficient
    prepared = coef.prepare(rollout.replace(old_logprobs=engine.logprobs(model, rollout)))
    engine.backward(model, prepared, coef, engine.ExecutionPlan(max_tokens=20))
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    assert grads and all("lora_" in n for n in grads)
    assert all(p.grad is None for n, p in model.named_parameters() if "lora_" not in n)
    # autograd of the surrogate through PEFT's own forward (full logits), token-mean per sequence
    model.zero_grad()
    logp = true_logprobs(model, prepared)
    gc = coef(prepared, logp.detach())
    (-(prepared.weights * gc * logp).sum()).backward()
    for n, p in model.named_parameters():
        if "lora_" in n:
            torch.testing.assert_close(grads[n], p.grad, rtol=1e-10, atol=1e-12)
            assert p.grad.abs().max() > 0, n


def test_lora_on_some_projections_trains_through_the_shared_prompt_pass(tmp_path):
    """LoRA on q_proj and v_proj only: the first layer's keys depend on no trained weight. The
    shared-prompt pass (prompts once per batch) gives the per-row pass's gradient, through the engine
    and through the command line."""
    model = add_lora(tiny_model(0), r=4, alpha=8, targets=["q_proj", "v_proj"])
    g = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.copy_(0.3 * torch.randn(p.shape, generator=g, dtype=p.dtype))
    rollout = shared_prompt_rollout(3, n_groups=2, group_size=3)
    coef = methods.grpo(beta=0.0).coefficient
    prepared = coef.prepare(rollout.replace(old_logprobs=engine.logprobs(model, rollout)))
    assert plan_shared_prefix(rollout.input_ids, rollout.attention_mask, rollout.completion_mask) is not None
    grads = {}
    for share in (True, False):
        model.zero_grad()
        engine.backward(model, prepared, coef, engine.ExecutionPlan(max_tokens=1000, share_prefix=share))
        grads[share] = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    assert grads[True].keys() == grads[False].keys() and grads[True]
    for n in grads[True]:
        torch.testing.assert_close(grads[True][n], grads[False][n], rtol=1e-10, atol=1e-12)
    assert any(float(v.abs().max()) > 0 for v in grads[True].values())
    done = run_cli(["train", "--method", "grpo", "--steps", "1", "--lora-r", "2", "--lora-targets", "q_proj,v_proj", "--questions-per-step", "2",
                    "--group-size", "2", "--max-new-tokens", "8", "--eval-size", "4", "--no-progress", "--out", "run"], tmp_path)
    assert done.returncode == 0 and (tmp_path / "run" / "adapter").is_dir(), done.stderr[-2000:]


def test_reference_is_the_base_model_with_adapters_off():
    base = tiny_model(0)
    model = lora_model(0)
    rollout = random_rollout(5)
    ref = Reference(model)
    assert ref.shares_policy and ref.state_dict() == {}  # no second copy
    want = engine.logprobs(base, rollout)
    assert torch.equal(ref.logprobs(rollout, engine.ExecutionPlan()), want)
    assert (engine.logprobs(model, rollout) - want).abs().max() > 1e-3  # the adapters do change the policy
    with pytest.raises(ValueError, match="cannot be reset"):
        ref.reset()


@pytest.mark.parametrize("fast", [True, False])
def test_samplers_sample_the_adapted_model(fast):
    model = lora_model(1)
    gen = generate(model, [[3, 4, 5], [6, 7]], group_size=3, max_new_tokens=6, eos_id=1, pad_id=0,
                   generator=torch.Generator().manual_seed(0), fast_decode=fast)
    from unified_rl.data.collate import to_rollout

    r = to_rollout(gen.prompt_ids, gen.completion_ids, pad_id=0, logprobs=gen.logprobs, logprob_field=("sampler_logprobs",))
    own = engine.logprobs(model, r.replace(temperature=1.0))
    torch.testing.assert_close(r.sampler_logprobs[r.completion_mask].double(), own[r.completion_mask].double(), rtol=0, atol=1e-5)


def _trainer(out, steps=4, checkpoint_every=2, **kw):
    cfg = TrainConfig(steps=steps, questions_per_step=4, lr=3e-3, max_new_tokens=6, lora_r=4, checkpoint_every=checkpoint_every, out_dir=str(out), **kw)
    return Trainer(small_model(), TOK, methods.grpo(beta=0.04, group_size=4), ROWS, cfg, reward=FromCallable(has_seven))


def test_lora_training_moves_only_adapters_and_resumes_bitwise(tmp_path):
    start = {k: v.clone() for k, v in small_model().state_dict().items()}
    straight = _trainer(tmp_path / "a")
    opt_params = {id(p) for g in straight.optimizer.param_groups for p in g["params"]}
    assert opt_params == {id(p) for n, p in straight.policy.named_parameters() if "lora_" in n}
    straight.run(progress=False)
    base = straight.policy.get_base_model()
    for name, p in base.named_parameters():  # the base weights never move
        if "lora_" not in name:
            assert torch.equal(p, start[name.replace(".base_layer", "")]), name
    assert any(float(p.detach().abs().max()) > 0 for n, p in straight.policy.named_parameters() if "lora_B" in n)
    split = _trainer(tmp_path / "b", steps=4)
    split.cfg = split.cfg.replace(steps=2)
    split.run(progress=False)  # checkpoint at step 2
    resumed = _trainer(tmp_path / "b")
    resumed.resume(str(tmp_path / "b" / "checkpoint"))
    assert resumed.step_count == 2
    resumed.run(progress=False)
    a = dict(straight.policy.named_parameters())
    for n, p in resumed.policy.named_parameters():
        assert torch.equal(p, a[n]), n
    saved = load_file(tmp_path / "b" / "checkpoint" / "tensors.safetensors")
    policy_keys = [k for k in saved if "policy" in k]
    assert policy_keys and all("lora_" in k for k in policy_keys)  # adapters only, not the base model


def test_lora_reference_cannot_reset_each_iteration():
    cfg = TrainConfig(steps=1, iterations=2, questions_per_step=2, lora_r=2)
    with pytest.raises(ValueError, match="reset_reference"):
        Trainer(small_model(), TOK, methods.grpo(group_size=2), ROWS, cfg, reward=FromCallable(has_seven))


def test_merged_model_loads_with_from_pretrained_and_matches(tmp_path):
    model = lora_model(2)
    rollout = random_rollout(9)
    want = engine.logprobs(model, rollout)
    folder = save_model(merged(model), TOK, str(tmp_path / "merged"))
    loaded = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float64, local_files_only=True).eval()
    assert not any("lora" in n for n, _ in loaded.named_parameters())
    from helpers import exact_norms

    torch.testing.assert_close(engine.logprobs(exact_norms(loaded), rollout), want, rtol=0, atol=1e-6)


def test_bad_lora_settings_are_clear_errors():
    with pytest.raises(ValueError, match="lora_r"):
        TrainConfig(lora_r=0)
    with pytest.raises(ValueError, match="would have no effect"):
        TrainConfig(lora_alpha=8)
    with pytest.raises(ValueError, match="LoRA targets"):
        add_lora(copy.deepcopy(tiny_model()), r=2, targets=["no_such_module"])


@pytest.mark.slow
def test_cli_trains_a_lora_adapter_resumes_and_merges(tmp_path, capsys):
    from unified_rl.apps.cli import main

    out = tmp_path / "run"
    argv = ["train", "--method", "grpo", "--lora-r", "4", "--steps", "2", "--questions-per-step", "2", "--group-size", "2",
            "--max-new-tokens", "6", "--eval-size", "4", "--checkpoint-every", "1", "--out", str(out), "--no-progress"]
    assert main(argv) == 0
    assert (out / "adapter" / "adapter_model.safetensors").exists() and (out / "adapter" / "adapter_config.json").exists()
    assert not (out / "model").exists()
    assert main([*argv[:6], "3", *argv[7:], "--resume", "--merge"]) == 0
    assert "resumed from" in capsys.readouterr().out
    loaded = AutoModelForCausalLM.from_pretrained(out / "model", local_files_only=True)
    assert not any("lora" in n for n, _ in loaded.named_parameters())
    assert main(["train", "--method", "grpo", "--merge", "--out", str(tmp_path / "x"), "--no-progress"]) == 2
    assert "no effect without --lora-r" in capsys.readouterr().err


def test_kl_full_reads_the_base_models_distribution_under_lora():
    """The full KL to pi_ref of a LoRA policy: the distribution is the base model's (adapters off,
    no copy), and the gradient equals the one with an explicit copy of the base model as pi_ref."""
    import unified_rl.coefficients as C
    from unified_rl.hf import BaseModel

    model = lora_model(2)
    rollout = random_rollout(4, n_groups=2, group_size=3)
    coef = C.chain(None, aggregation=C.token_mean(), vocabulary=(C.kl_full(0.5),))
    prepared = coef.prepare(rollout)
    base = copy.deepcopy(model).unload()  # PEFT's own base model, its LoRA layers removed
    grads = []
    for ref in (BaseModel(model), base):
        model.zero_grad()
        engine.backward(model, prepared, coef, engine.ExecutionPlan(max_tokens=15), {"reference": ref})
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys() and all("lora_" in n for n in grads[0])
    for n in grads[0]:
        torch.testing.assert_close(grads[0][n], grads[1][n], rtol=1e-12, atol=1e-15)
    assert max(float(g.abs().max()) for g in grads[0].values()) > 0  # the adapters moved the policy off its base
    trainer = Trainer(lora_model(2), TOK, methods.Method("kl_full", coef, methods.sft().data_source), ROWS,
                      TrainConfig(steps=1, questions_per_step=2, max_new_tokens=48))
    assert "kl_full/mean" in trainer.train_step()


def test_distillation_into_a_lora_student_is_the_gradient_through_peft():
    """gkd's pass over the vocabulary with a LoRA student: gradients reach the adapters only and equal
    autograd of the token-mean generalized JSD from PEFT's own full logits (fp64)."""
    import unified_rl.coefficients as C

    model, teacher = lora_model(3), tiny_model(5)
    rollout = random_rollout(6, n_groups=2, group_size=3)
    coef = methods.gkd(beta=0.5).coefficient
    prepared = coef.prepare(rollout)
    model.zero_grad()
    engine.backward(model, prepared, coef, engine.ExecutionPlan(max_tokens=12), {"teacher": teacher})
    ours = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    assert ours and all("lora_" in n for n in ours)
    target = prepared.completion_mask[:, 1:]

    def logp_of(m):
        return torch.log_softmax(m(input_ids=prepared.input_ids, attention_mask=prepared.attention_mask.long()).logits[:, :-1][target].double(), -1)

    with torch.no_grad():
        others = {"teacher": logp_of(teacher)}
    model.zero_grad()
    (-(prepared.weights[:, 1:][target] * C.jsd(0.5).objective(logp_of(model), others)).sum()).backward()
    for n, g in ours.items():
        torch.testing.assert_close(g, model.get_parameter(n).grad, rtol=1e-10, atol=1e-13)
    assert max(float(g.abs().max()) for g in ours.values()) > 0
