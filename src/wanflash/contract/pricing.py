"""Task cost, from the model page's price table.

cost = rate(resolution class, audio) x duration x numberResults, plus the reference-video (R2V)
rate per second when a reference video is used. Rates are USD per second of output:

    720p  audio 0.05    720p  silent 0.025
    1080p audio 0.075   1080p silent 0.0375   (R2V rates are the same, added on top)

The page's example responses carry small extras that the table does not explain (0.3015
where 6 s x 0.05 = 0.30, 0.3502 for 7 s x 0.05 = 0.35; none for the silent example). We bill
the table exactly and do not invent a surcharge; the tests pin our figures and the gap.
Decimal arithmetic keeps 0.0375 x 5 = 0.1875 exact.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Literal

RATES: dict[tuple[str, bool], Decimal] = {
    ("720p", True): Decimal("0.05"),
    ("720p", False): Decimal("0.025"),
    ("1080p", True): Decimal("0.075"),
    ("1080p", False): Decimal("0.0375"),
}
R2V_RATES = RATES  # the page lists the same per-second figures for reference-video use


def task_cost(
    resolution_class: Literal["720p", "1080p"],
    duration: int,
    *,
    audio: bool,
    number_results: int = 1,
    reference_video: bool = False,
) -> float:
    """USD for one task. ``audio`` is true when the output carries sound (generated or input)."""
    per_second = RATES[(resolution_class, audio)]
    if reference_video:
        per_second += R2V_RATES[(resolution_class, audio)]
    total = per_second * duration * number_results
    return float(total.quantize(Decimal("0.000001")))
