"""Data sources, recipes that build them, rollout collation and dataset loaders."""

from .collate import concat, to_rollout
from .dynamic import DynamicSampling
from .mixed import MixedSource
from .ranked import RankedPairSource
from .recipes import Dynamic, Given, Mixed, Pairs, RankedPairs, Preferences, Sampled, Setup, SourceRecipe, Supervised, Unpaired, UnpairedPreferences
from .rows import check_rows, gsm8k_rows, read_jsonl
from .encoder import Encoder
from .sources import PairSource, PreferenceSource, ReplaySource, RowCursor, SampledSource, SupervisedSource

__all__ = ["concat", "to_rollout", "Dynamic", "DynamicSampling", "Given", "Mixed", "MixedSource", "RankedPairs", "RankedPairSource", "Pairs", "Preferences", "Unpaired", "UnpairedPreferences", "Sampled", "Setup", "SourceRecipe", "Supervised", "check_rows", "gsm8k_rows",
           "read_jsonl", "Encoder", "PairSource", "PreferenceSource", "ReplaySource", "RowCursor", "SampledSource", "SupervisedSource"]
