"""Multi-turn episodes: token-in / token-out conditioning, masks, limits, tools, the adapters, and
environments that misbehave (each leaves its episode unscored, warned and counted, never a crash)."""

import json

import pytest
import torch

from unified_rl.data.encoder import Encoder
from unified_rl.environments import EpisodeSource, Limits, ReasoningGym, Tools, Turn, from_trl, hermes_calls
from unified_rl.environments.reasoning_gym import reasoning_gym_rows
from unified_rl.hf import StaticCacheSampler
from env_helpers import Hangs, Huge, NaNReward, NeverEnds, NonText, Raises, Talk, ToolTalk, add, eos_model, qwen_tokenizer

TOK = qwen_tokenizer()
ROWS = [{"prompt": "What is 2+3?"}, {"prompt": "Name a prime above 10."}, {"prompt": "Say hi"}]


class Recording(StaticCacheSampler):
    """The real static-cache sampler, keeping every prompt it was asked to continue."""

    def __init__(self, *a, **k):
        super().__init__(*a, **k)
        self.prompts = []

    def sample(self, policy, prompts, group_size, max_new_tokens, temperature, generator):
        self.prompts += [list(p) for p in prompts]
        return super().sample(policy, prompts, group_size, max_new_tokens, temperature, generator)


def _source(env=Talk, tools=False, limits=Limits(max_turns=4, max_tokens=400), sampler=None, g=2, **kw):
    factory = ToolTalk if tools else env
    sampler = sampler or StaticCacheSampler(TOK.eos_token_id, TOK.pad_token_id)
    return EpisodeSource(ROWS, Encoder(TOK, 512, 64), sampler, factory, samples_per_question=g, max_new_tokens=24, limits=limits, **kw)


def _segments(mask_row):
    """[start, end) of each run of True in a 1-d bool list."""
    out, start = [], None
    for i, m in enumerate(mask_row + [False]):
        if m and start is None:
            start = i
        if not m and start is not None:
            out.append((start, i))
            start = None
    return out


@pytest.mark.parametrize("tools", [False, True])
def test_every_turn_is_conditioned_on_exactly_the_ids_so_far(tools):
    """With Qwen2.5's chat template (with its tools block and tool responses): each model turn continues exactly the
    episode's ids before it (prompt + earlier turns + the environment's tokens, never re-rendered),
    and the ids the model produced are exactly the completion_mask tokens, with its log-probs."""
    sampler = Recording(TOK.eos_token_id, TOK.pad_token_id)
    src = _source(tools=tools, sampler=sampler)
    r = src.sample(eos_model(TOK), 3)
    seen = {tuple(p) for p in sampler.prompts}
    turns = 0
    for i in range(r.batch_size):
        ids = r.input_ids[i][r.attention_mask[i]].tolist()
        segments = _segments(r.completion_mask[i].tolist())
        assert segments, "every episode has a model turn"
        for start, end in segments:
            assert tuple(ids[:start]) in seen, f"episode {i}: the turn at {start} was not sampled from the ids before it"
            assert ids[end - 1] == TOK.eos_token_id or (end == len(ids) and bool(r.truncated[i]))
        turns += len(segments)
        between = [ids[e:s] for (_, e), (s, _) in zip(segments, segments[1:])]
        for chunk in between:  # the environment's tokens: the template's turn markers around a reply
            assert TOK.decode(chunk).startswith("\n<|im_start|>user\n") and TOK.decode(chunk).endswith("<|im_start|>assistant\n")
        assert torch.all(r.sampler_logprobs[i][r.completion_mask[i]] < 0)
        assert torch.all(r.sampler_logprobs[i][~r.completion_mask[i]] == 0)
    assert turns > r.batch_size, "some episodes must have had several turns"
    if tools:
        prompt = TOK.decode(r.input_ids[0][: int(r.completion_mask[0].long().argmax())])
        assert '"name": "add"' in prompt and "<tools>" in prompt, "the tools are rendered by the template"


def test_a_shared_prompt_is_sampled_once_per_question():
    sampler = Recording(TOK.eos_token_id, TOK.pad_token_id)
    _source(sampler=sampler, g=4).sample(eos_model(TOK), 3)
    assert len(sampler.prompts[:3]) == 3 and len({tuple(p) for p in sampler.prompts[:3]}) == 3


def test_rewards_turn_rewards_and_limits():
    r = _source().sample(eos_model(TOK), 3)
    assert r.group_ids.tolist() == [0, 0, 1, 1, 2, 2]
    for i in range(r.batch_size):
        ends = [e - 1 for _, e in _segments(r.completion_mask[i].tolist())]
        marked = r.step_mask[i].nonzero().squeeze(1).tolist() if r.step_mask is not None else []
        assert set(marked) <= set(ends), "a turn's reward sits on its last model token"
        if not r.truncated[i]:
            assert len(ends) == Talk.turns and marked == ends
            assert r.step_rewards[i][marked].tolist() == pytest.approx([0.1, 0.2, 0.75])
            assert r.rewards[i].item() == pytest.approx(len(r.texts[i].prompt) % 3 + 1.5)
    assert bool(r.scored.all())
    short = _source(limits=Limits(max_turns=2, max_tokens=300)).sample(eos_model(TOK), 3)
    assert bool(short.truncated.all()) and int((short.completion_mask[:, 1:] & ~short.completion_mask[:, :-1]).sum()) <= 2 * 6
    tight = _source(limits=Limits(max_turns=4, max_tokens=30)).sample(eos_model(TOK), 3)
    assert bool(tight.truncated.all())
    lengths = (tight.attention_mask.sum(1) - tight.completion_mask.long().argmax(1))
    assert int(lengths.max()) <= 30


@pytest.mark.parametrize("env, what", [
    (type("R", (Raises,), {"where": "reset"}), "reset raised RuntimeError: reset broke"),
    (type("S", (Raises,), {"where": "step"}), "step raised RuntimeError: step broke"),
    (type("W", (Raises,), {"where": "reward"}), "reward raised RuntimeError: reward broke"),
    (Hangs, "step did not return within 0.5 s"),
    (Huge, "observation of 5000 tokens, over max_observation_tokens=128"),
    (NonText, "not {'role': str, 'content': str} (non-text observation)"),
    (NaNReward, "reward returned nan"),
])
def test_a_bad_environment_leaves_its_episodes_unscored(env, what):
    src = _source(env, limits=Limits(max_turns=3, max_tokens=300, max_observation_tokens=128, timeout_s=0.5))
    with pytest.warns(UserWarning, match=what.replace("(", r"\(").replace(")", r"\)").replace("{", r"\{").replace("}", r"\}")) as record:
        r = src.sample(eos_model(TOK), 3)
    assert not bool(r.scored.any()) and len(record) == r.batch_size
    m = src.metrics()
    assert m["env/timeouts" if env is Hangs else "env/errors"] == r.batch_size
    assert r.step_mask is None or not bool(r.step_mask.any()), "a failed episode's turn rewards are not used either"


def test_an_environment_that_never_ends_is_cut_at_the_turn_limit():
    src = _source(NeverEnds, limits=Limits(max_turns=3, max_tokens=400))
    r = src.sample(eos_model(TOK), 3)
    assert bool(r.truncated.all()) and src.metrics()["env/truncated"] == 1.0 and bool(r.scored.all())


def test_tool_calls_are_parsed_run_and_their_failures_fed_back():
    assert hermes_calls('<tool_call>\n{"name": "add", "arguments": {"a": 1, "b": 2}}\n</tool_call>') == [("add", {"a": 1, "b": 2})]
    assert hermes_calls('<tool_call>{"name": "add", "arguments": "{\\"a\\": 1}"}</tool_call>') == [("add", {"a": 1})]
    assert hermes_calls("no call here") == []
    assert "not JSON" in hermes_calls("<tool_call>{oops}</tool_call>")[0]
    assert "never closed" in hermes_calls('<tool_call>{"name": "add"')[0]
    env = Tools([add], reward=lambda row, turns: float(turns[-1].strip() == "3"))
    env.reset({"prompt": "1+2"})
    text = ('<tool_call>{"name": "add", "arguments": {"a": 1, "b": 2}}</tool_call><tool_call>{"name": "mul", "arguments": {}}</tool_call>'
            '<tool_call>{"name": "add", "arguments": {"a": 1}}</tool_call><tool_call>[1]</tool_call>')
    reply = env.step(Turn(text, (), 0))
    contents = [m["content"] for m in reply.messages]
    assert contents[0] == "3" and json.loads(contents[1]) == {"error": "Tool mul not found."}
    assert "missing 1 required positional argument" in json.loads(contents[2])["error"] and "malformed" in json.loads(contents[3])["error"]
    assert reply.info == {"tool_calls": 4, "tool_errors": 3} and not reply.done
    assert env.step(Turn("3", (), 1)).done and env.reward() == 1.0


def test_a_tool_without_a_usable_schema_is_refused_when_the_source_is_built():
    def bad(x):
        return x

    with pytest.raises(ValueError, match=r"^tool 'bad' has no usable schema"):
        EpisodeSource(ROWS, Encoder(TOK), StaticCacheSampler(TOK.eos_token_id, TOK.pad_token_id), lambda: Tools([bad], lambda r, t: 0.0))


def test_trl_environment_factory_adapter():
    class Counter:  # TRL's environment_factory convention: public methods are tools, reset(**row), get_reward()
        def reset(self, **row):
            self.count = 0
            return f" (start at {row['start']})"

        def increment(self, by: int) -> int:
            """Add to the counter.

            Args:
                by: how much
            """
            self.count += by
            return self.count

        def get_reward(self):
            return float(self.count)

    env = from_trl(Counter)()
    assert [fn.__name__ for fn in env.tools] == ["increment"]
    assert env.reset({"prompt": "p", "start": 0}) == " (start at 0)"
    reply = env.step(Turn('<tool_call>{"name": "increment", "arguments": {"by": 5}}</tool_call>', (), 0))
    assert reply.messages[0]["content"] == "5" and env.step(Turn("done", (), 1)).done and env.reward() == 5.0


def test_reasoning_gym_episodes_grade_with_its_own_scorer():
    rg = pytest.importorskip("reasoning_gym")
    data = rg.create_dataset("basic_arithmetic", size=4, seed=3)
    rows = reasoning_gym_rows(data)
    env = ReasoningGym(data, attempts=2)
    env.reset(rows[0])
    first = env.step(Turn("<answer>999999</answer>", (), 0))
    assert not first.done and first.reward == 0.0 and "not right" in first.messages[0]["content"]
    last = env.step(Turn(f"<answer>{rows[0]['answer']}</answer>", (), 1))
    assert last.done and last.reward == 1.0 and env.reward() == 1.0
    src = EpisodeSource(rows, Encoder(TOK, 512, 64), StaticCacheSampler(TOK.eos_token_id, TOK.pad_token_id), lambda: ReasoningGym(data),
                        samples_per_question=2, max_new_tokens=16, limits=Limits(max_turns=2, max_tokens=200))
    r = src.sample(eos_model(TOK), 2)
    assert bool(r.scored.all()) and r.rewards.tolist() == [0.0] * 4  # a random model does not answer in <answer> tags


@pytest.mark.parametrize("sampler, lora_r", [("static", 4), ("hf", None)])
def test_episodes_train_with_each_sampler_and_with_lora(sampler, lora_r):
    """A Trainer step on episodes with the HF ``generate`` sampler, and with the static decoder on a
    LoRA policy: the environment's metrics are logged and the trained parameters move."""
    import unified_rl as url
    from unified_rl.environments import with_environment

    class ByLength(Talk):  # rewards that differ within a group: the parity of the model's last turn's length
        def step(self, turn):
            self.last = len(turn.token_ids)
            return super().step(turn)

        def reward(self):
            return float(self.last % 2)

    method = with_environment(url.methods.grpo(beta=0.04, group_size=4), ByLength, Limits(max_turns=3, max_tokens=200))
    cfg = url.config.TrainConfig(steps=1, questions_per_step=2, lr=1e-2, max_new_tokens=16, sampler=sampler, lora_r=lora_r)
    trainer = url.loop.Trainer(eos_model(TOK), TOK, method, ROWS, cfg)
    before = [p.detach().clone() for p in trainer.params]
    m = trainer.run(progress=False)[-1]
    assert m["env/turns"] > 1 and m["env/errors"] == 0 and m["reward/unscored"] == 0
    assert any(not torch.equal(a, p) for a, p in zip(before, trainer.params))


def test_supervised_episodes_train_the_model_turns_only():
    from unified_rl.apps.tasks import char_tokenizer
    from unified_rl.apps.tasks.calculator import tool_rows
    from unified_rl.environments import SupervisedEpisodes

    tok = char_tokenizer()
    rows = tool_rows([{"prompt": "7*4-1=", "answer": "27"}])
    assert rows[0]["episode"] == ["7*4=", "28;", "28-1=", "27;", "#27"]
    r = SupervisedEpisodes(rows, Encoder(tok, 64, 9)).sample(None, 1)
    ids, mask = r.input_ids[0].tolist(), r.completion_mask[0].tolist()
    text = "".join(("[" if m and (k == 0 or not mask[k - 1]) else "") + (tok.decode([t]) if t != tok.eos_token_id else "$")
                   for k, (t, m) in enumerate(zip(ids, mask)))
    assert text == "7*4-1=[7*4=$28;[28-1=$27;[#27$"  # [ opens a trained turn, $ is eos; the calculator's results are context
    assert sum(mask) == len("7*4=$28-1=$#27$")
    with pytest.raises(ValueError, match=r"row 0: column 'episode' must be a list of texts alternating"):
        SupervisedEpisodes([{"prompt": "7*4=", "episode": ["7*4=", "28;"]}], Encoder(tok))


def test_the_calculator_computes_steps_and_scores_the_answer():
    from unified_rl.apps.tasks.calculator import Calculator

    env = Calculator()
    env.reset({"prompt": "7*4-1=", "answer": "27"})
    assert env.step(Turn("7*4=", (), 0)).text == "28;" and env.step(Turn("28-1=", (), 1)).text == "27;"
    bad = env.step(Turn("28-1", (), 2))
    assert bad.text == ";" and bad.info == {"tool_calls": 1, "tool_errors": 1}
    assert env.step(Turn("#27", (), 3)).done and env.reward() == 1.0
    env.reset({"prompt": "7*4-1=", "answer": "27"})
    assert env.step(Turn("#26", (), 0)).done and env.reward() == 0.0
