"""The packing measurement (scripts/measure_packing.py) counts words that land in the other party's turn."""
from __future__ import annotations

from support import load_script

mp = load_script("measure_packing")

REFS = [mp.RefTurn("agent", 0.0, 2.0, "how can I help you"),
        mp.RefTurn("caller", 2.5, 5.0, "my card was declined")]


def _seg(speaker, start, end, text):
    return {"speaker": speaker, "start_s": start, "end_s": end, "text": text}


def test_words_in_their_own_turn_count_as_matched_and_not_cross_party():
    a = mp.assignment([_seg("agent", 0.1, 1.9, "how can I help you"), _seg("caller", 2.6, 4.9, "my card was declined")],
                      REFS, language="en")
    assert (a.matched, a.cross_party, a.wrong_turn) == (9, 0, 0)


def test_a_boundary_word_given_to_the_next_party_counts_as_cross_party():
    a = mp.assignment([_seg("agent", 0.1, 1.9, "how can I help"), _seg("caller", 2.6, 4.9, "you my card was declined")],
                      REFS, language="en")
    assert (a.matched, a.cross_party) == (9, 1)
    assert "'you' said by agent" in a.examples[0]


def test_party_errors_pool_each_partys_turns():
    errs = mp.party_errors([_seg("agent", 0.1, 1.9, "how can I help you"), _seg("caller", 2.6, 4.9, "my card")],
                           REFS, language="en")
    assert errs["agent"].rate == 0.0
    assert errs["caller"].rate == 0.5
