"""reasoning-gym's procedurally generated tasks as multi-turn episodes: the model answers in
``<answer>...</answer>`` (reasoning-gym's own ``extract_answer``), the task's ``score_answer`` grades
it, and a wrong answer is told so and may be retried, up to ``attempts`` turns. The episode's
reward is its last answer's score; each attempt's score is also a per-turn reward.

reasoning-gym is the adapter here because it installs beside torch with small dependencies, needs
no server and no network, and grades with its own scorers (``pip install reasoning-gym``, in the
``[dev]`` extra). verifiers 0.4 and OpenEnv (openenv-core 0.3) run environments behind HTTP / MCP
servers with an OpenAI client (pydantic, fastapi, gradio, openai ...): their environments plug in
through the same :class:`~unified_rl.environments.Environment` protocol, with no adapter shipped here.
"""

from typing import Any, Optional

from .protocol import Environment, Reply, Turn

FORMAT = " Give your final answer as <answer>...</answer>."


def reasoning_gym_rows(dataset: Any) -> list[dict]:
    """A reasoning-gym dataset's entries as rows: ``prompt`` (the question and the answer format),
    ``answer`` and ``entry`` (its index, which the environment grades against)."""
    return [{"prompt": entry["question"] + FORMAT, "answer": str(entry["answer"]), "entry": i} for i, entry in enumerate(dataset)]


class ReasoningGym(Environment):
    """One episode on a row of :func:`reasoning_gym_rows` from ``dataset``: up to ``attempts`` answers,
    each graded by the dataset's ``score_answer`` and, when below 1, answered with feedback."""

    def __init__(self, dataset: Any, attempts: int = 2):
        from reasoning_gym.utils import extract_answer

        self.dataset, self.attempts, self.extract = dataset, attempts, extract_answer
        self.entry: Optional[dict] = None
        self.score: Optional[float] = None

    def reset(self, row: dict) -> Optional[str]:
        self.entry, self.score = self.dataset[int(row["entry"])], None
        return None

    def step(self, turn: Turn) -> Reply:
        self.score = float(self.dataset.score_answer(self.extract(turn.text), self.entry))
        if self.score >= 1.0 or turn.index + 1 >= self.attempts:
            return Reply(reward=self.score, done=True)
        return Reply(messages=[{"role": "user", "content": "That is not right. Try again."}], reward=self.score)

    def reward(self) -> Optional[float]:
        return self.score
