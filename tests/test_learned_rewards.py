"""The generative verifier (``VerifierReward``) and the ``Product`` of rewards: the verifier accepts
exactly what it would have written greedily, trains on the samples labelled correct only, and
learns; a composite reward's score is its parts', and it re-trains and checkpoints every part."""

import copy

import pytest
import torch
from hypothesis import given, settings, strategies as st

from unified_rl.apps.tasks import char_tokenizer
from unified_rl.data.collate import to_rollout
from unified_rl.hf import tiny_llama, tiny_reward_model
from unified_rl.rewards import ModelReward, OutcomeReward, Product, VerifierReward, WeightedSum
from unified_rl.apps.tasks import extract_answer
from unified_rl.rollout import Sample

TOK = char_tokenizer()
MODEL = tiny_llama(len(TOK), hidden=32, layers=2, heads=2, intermediate=64, seed=3)
DIGITS = "0123456789+-*=;#"


def greedy_writes(model, prompt: str, completion: str) -> bool:
    """Reference: one forward per prefix; is each completion character the argmax after the ones before it?"""
    ids = TOK(prompt).input_ids
    for t in TOK(completion, add_special_tokens=False).input_ids:
        with torch.no_grad():
            nxt = int(model(input_ids=torch.tensor([ids])).logits[0, -1].argmax())
        if nxt != t:
            return False
        ids = ids + [t]
    return True


def greedy_completion(model, prompt: str, n: int) -> str:
    ids = TOK(prompt).input_ids
    for _ in range(n):
        with torch.no_grad():
            ids = ids + [int(model(input_ids=torch.tensor([ids])).logits[0, -1].argmax())]
    return TOK.decode(ids[len(TOK(prompt).input_ids):])


@settings(max_examples=25, deadline=None)
@given(st.lists(st.tuples(st.text(DIGITS, min_size=1, max_size=8), st.text(DIGITS, min_size=1, max_size=6), st.booleans()),
                min_size=1, max_size=6))
def test_the_verifier_accepts_exactly_what_it_would_write_greedily(rows):
    v = VerifierReward(MODEL, TOK)
    pairs = []
    for prompt, completion, greedy in rows:  # half the completions are the model's own greedy text, which it must accept
        pairs.append((prompt, greedy_completion(MODEL, prompt, len(completion)) if greedy else completion))
    scores = v.score_pairs(pairs)
    assert [bool(s > 0.5) for s in scores] == [greedy_writes(MODEL, p, c) for p, c in pairs]
    assert all(bool(s > 0.5) for s, (_, _, greedy) in zip(scores, rows) if greedy)


def test_the_verifier_trains_on_the_samples_labelled_correct_only_and_learns_them():
    right = [("1+2=", "1+2=3;#3"), ("2*3=", "2*3=6;#6")]
    wrong = [("4-1=", "4-1=5;#5"), ("5+5=", "5+5=11;#11")]
    mixed = VerifierReward(copy.deepcopy(MODEL), TOK, lr=3e-3, seed=1)
    only = VerifierReward(copy.deepcopy(MODEL), TOK, lr=3e-3, seed=1)
    assert not any(bool(s > 0.5) for s in mixed.score_pairs(right))  # a random model writes neither
    mixed.fit([(p, c, 1.0) for p, c in right] + [(p, c, 0.0) for p, c in wrong], epochs=60)
    only.fit([(p, c, 1.0) for p, c in right], epochs=60)
    for a, b in zip(mixed.model.parameters(), only.model.parameters()):
        assert torch.equal(a, b)  # the wrong samples changed nothing
    assert all(bool(s > 0.5) for s in mixed.score_pairs(right))


def _rollout(pairs):
    texts = [Sample(prompt=p, completion=c, columns={"answer": str(eval(p[:-1]))}) for p, c in pairs]
    return to_rollout([TOK(p).input_ids for p, _ in pairs], [TOK(c, add_special_tokens=False).input_ids for _, c in pairs],
                      pad_id=TOK.pad_token_id, texts=texts)


PAIRS = [("1+2=", "1+2=3;#3"), ("4-1=", "4-1=5;#5"), ("2*3=", "2*3=6;#6"), ("5+5=", "5+5=10;#10")]


def test_a_product_scores_the_product_of_its_parts_and_retrains_and_checkpoints_every_part():
    rule = OutcomeReward(extract_answer)
    parts = [ModelReward(tiny_reward_model(len(TOK), hidden=32, layers=1), TOK, labeler=rule, seed=0),
             VerifierReward(copy.deepcopy(MODEL), TOK, labeler=rule, seed=0)]
    both = Product(parts)
    r = _rollout(PAIRS)
    out = both(r, r.texts)
    expected = parts[0](r, r.texts).rewards * parts[1](r, r.texts).rewards
    assert torch.equal(out.rewards, expected) and bool(out.scored.all())
    assert torch.equal(both.score_pairs(PAIRS), expected)
    saved = copy.deepcopy(both.state_dict())
    both.observe(out)
    assert [len(p.pending) for p in parts] == [4, 4]
    assert both.metrics()["reward_model/policy_accuracy"] == sum((float(s) > 0.5) == (i != 1) for i, s in enumerate(out.rewards)) / 4
    before = [copy.deepcopy(p.model.state_dict()) for p in parts]
    m = both.end_iteration(0.1)
    assert "reward_model/loss" in m and "reward_model/loss/1" in m  # two parts, two losses
    for p, b in zip(parts, before):  # each part trained on the 4 new samples (the verifier on its 3 correct ones) and kept them
        assert len(p.history) == 4 and not p.pending
        assert any(not torch.equal(v, b[k]) for k, v in p.model.state_dict().items())
    both.load_state_dict(saved)
    assert [len(p.history) for p in parts] == [0, 0] and torch.equal(both.score_pairs(PAIRS), expected)


def test_a_weighted_sum_retrains_a_learned_part_too():
    """A reward model inside a WeightedSum is re-trained at each iteration, as it would be alone."""
    rm = ModelReward(tiny_reward_model(len(TOK), hidden=32, layers=1), TOK, labeler=OutcomeReward(extract_answer), seed=0)
    total = WeightedSum([(1.0, rm), (0.5, OutcomeReward(extract_answer))])
    r = _rollout(PAIRS)
    total.observe(total(r, r.texts))
    assert total.end_iteration(0.1)["reward_model/replayed"] == 0.0
    assert len(rm.history) == 4
    total.load_state_dict({})  # a checkpoint written before composites saved their parts: it still resumes
    assert len(rm.history) == 4
    with pytest.raises(ValueError, match="the checkpoint has 2 parts, this reward 1"):
        Product([rm]).load_state_dict({"parts": [{}, {}]})


def test_composites_check_their_parts_and_share_one_metrics_rule():
    """A part is checked against RewardFunction when the composite is built (not probed later), and
    WeightedSum and Product report their parts' metrics by the same rule."""

    class Bare:  # a callable without the protocol's hooks
        def __call__(self, rollout, texts):
            return rollout

    with pytest.raises(TypeError, match=r"WeightedSum part 1: Bare does not satisfy url.RewardFunction: no end_iteration"):
        WeightedSum([(1.0, OutcomeReward(extract_answer)), (1.0, Bare())])
    with pytest.raises(ValueError, match="Product: no parts"):
        Product([])

    class Says(OutcomeReward):
        def __init__(self, value):
            super().__init__(extract_answer)
            self.value = value

        def metrics(self):
            return {"reward/custom": self.value}

    parts = [Says(1.0), Says(2.0), Says(1.0)]
    want = {"reward/custom": 1.0, "reward/custom/1": 2.0}
    assert WeightedSum([(1.0, p) for p in parts]).metrics() == want == Product(parts).metrics()
