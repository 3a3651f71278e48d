"""Multi-turn episodes: environments and tools, their tokens out of the gradient (docs/environments.md).

* :class:`Environment`, :class:`Turn`, :class:`Reply` -- the protocol an episode talks to;
* :class:`EpisodeSource` and :class:`Limits` -- the multi-turn data source (token-in / token-out);
* :func:`with_environment` -- any online method trained on episodes; :class:`SupervisedEpisodes` -- SFT on transcripts;
* :class:`Tools`, :func:`hermes_calls`, :func:`from_trl` -- tools as Python functions (TRL's conventions);
* :class:`ReasoningGym` -- reasoning-gym's tasks as episodes with feedback (``reasoning_gym``).
"""

from .protocol import Environment, EnvironmentFactory, Reply, Turn
from .reasoning_gym import ReasoningGym
from .recipe import EnvironmentScores, Episodes, with_environment
from .source import EpisodeSource, Limits
from .supervised import SupervisedEpisodes
from .tools import Tools, from_trl, hermes_calls

__all__ = ["Environment", "EnvironmentFactory", "Reply", "Turn", "EpisodeSource", "Limits", "Episodes", "EnvironmentScores",
           "with_environment", "SupervisedEpisodes", "Tools", "from_trl", "hermes_calls", "ReasoningGym"]
