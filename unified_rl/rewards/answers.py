"""Answer extractors and normalisation: how a completion's final answer is read."""

import math
from dataclasses import dataclass
from typing import Optional


def normalize_number(text: Optional[str]) -> Optional[str]:
    """'1,234' -> '1234', '12.0' -> '12', ' 7 ' -> '7'; other text is returned stripped."""
    if text is None:
        return None
    t = text.strip().replace(",", "").rstrip(".")
    try:
        x = float(t)
    except ValueError:
        return t
    return str(int(x)) if math.isfinite(x) and x == int(x) else t


@dataclass(frozen=True)
class AfterMarker:
    """An answer extractor: the text after the last ``marker``, number-normalised; None without
    one. ``AfterMarker("####")`` reads GSM8K solutions, ``AfterMarker("#")`` the arithmetic task's."""

    marker: str = "####"

    def __call__(self, completion: str) -> Optional[str]:
        """The final answer of ``completion``, or None."""
        if self.marker not in completion:
            return None
        return normalize_number(completion.rsplit(self.marker, 1)[1])
