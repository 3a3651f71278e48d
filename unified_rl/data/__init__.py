"""Data sources, sampling and dataset loaders."""

from .rows import check_rows, gsm8k_rows, read_jsonl
from .sampling import Generated, generate, to_rollout
from .sources import Encoder, PairSource, PreferenceSource, ReplaySource, RowCursor, SampledSource, SupervisedSource, concat

__all__ = ["check_rows", "gsm8k_rows", "read_jsonl", "Generated", "generate", "to_rollout", "Encoder", "PairSource",
           "PreferenceSource", "ReplaySource", "RowCursor", "SampledSource", "SupervisedSource", "concat"]
