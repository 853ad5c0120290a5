"""The benchmark JSON's entries agree with themselves: a reader who divides the printed figures gets the ratio."""

from __future__ import annotations

from bench.common import result


def test_the_ratio_and_the_verdict_are_those_of_the_printed_figures() -> None:
    # the unrounded figures give 14.8876 and meet a target of 15,483.31; the printed ones do neither
    entry = result("x", 15483.321566700897, "events/s", "higher", "peer", 1040.0150136711031, {}, target=15483.31)
    assert (entry["value"], entry["peer"]["value"]) == (15483.3, 1040.02)
    assert entry["ratio"] == round(entry["value"] / entry["peer"]["value"], 4) == 14.8875
    assert entry["meets_target"] is False
