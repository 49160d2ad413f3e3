"""The evaluation pauses Python's cyclic garbage collector (``indicator/evaluate.py``,
``_collector_paused``, docs/indicator.md section 7) and must always give it back as it was:
after overlapping evaluations, after an error, and never turning on one that was off."""

from __future__ import annotations

import gc

import pytest

from indicator import evaluate as ev


def test_paused_inside_and_back_after_nested_and_failed_evaluations():
    assert gc.isenabled()
    with ev._collector_paused():
        assert not gc.isenabled()
        with ev._collector_paused():  # an overlapping evaluation in another API thread
            assert not gc.isenabled()
        assert not gc.isenabled()  # the first one still runs
    assert gc.isenabled()
    with pytest.raises(RuntimeError), ev._collector_paused():
        raise RuntimeError("a failed evaluation")
    assert gc.isenabled()


def test_a_collector_turned_off_elsewhere_stays_off():
    gc.disable()
    try:
        with ev._collector_paused():
            assert not gc.isenabled()
        assert not gc.isenabled()
    finally:
        gc.enable()
