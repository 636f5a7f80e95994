"""The balancing policy as a table: connections held by each serving worker in, closes out."""

from __future__ import annotations

import pytest

from supervisor.balance import Load, plan

#: (connections by worker, closes by worker, why)
TABLE = [
    ([16, 0], [8, 0], "a worker joined beside one holding all 16"),
    ([0, 16], [0, 8], "in any order"),
    ([16, 0, 0], [10, 0, 0], "two joined: the remainder stays with the most loaded"),
    ([8, 8, 0], [2, 3, 0], "the tie goes to the first, which keeps the remainder"),
    ([9, 7], [0, 0], "within 12.5% of even (8): left alone"),
    ([10, 6], [2, 0], "past it: the surplus over an even share, no more"),
    ([6, 5, 5], [0, 0, 0], "as even as whole connections go"),
    ([6, 6, 4], [0, 1, 0], "one below: a worker at the larger share keeps it, the other gives one"),
    ([2, 1], [0, 0], "one apart never moves: it would only move the imbalance"),
    ([2, 0], [1, 0], "two apart does"),
    ([1, 0, 0, 0], [0, 0, 0, 0], "a lone connection stays where it is"),
    ([0, 0], [0, 0], "no connections"),
    ([100, 90], [0, 0], "within 12.5% of 95"),
    ([110, 80], [15, 0], "past it"),
    ([16], [0], "one worker: nobody to spread to"),
    ([], [], "none serving"),
]


@pytest.mark.parametrize(("connections", "closes", "why"), TABLE, ids=[row[2] for row in TABLE])
def test_the_surplus_over_an_even_share_closes(connections, closes, why):
    assert plan([Load(count) for count in connections]) == closes


def test_nothing_is_asked_while_a_close_asked_for_is_pending():
    # Its connections are on their way to other workers: the counts are not yet what they will be.
    assert plan([Load(16, pending=True), Load(0)]) == [0, 0]
    assert plan([Load(12), Load(0, pending=True), Load(0)]) == [0, 0, 0]
    assert plan([Load(12), Load(0), Load(0)]) == [8, 0, 0]


def test_the_closers_keep_an_even_share_and_close_no_more_than_the_others_lack():
    for counts in ([37, 0, 0, 0], [20, 19, 0], [5, 0, 0, 0, 0, 0, 0, 0], [33, 1], [64, 0], [3, 9, 27]):
        closes = plan([Load(count) for count in counts])
        low, high = divmod(sum(counts), len(counts))[0], -(-sum(counts) // len(counts))
        lacking = sum(max(0, high - count) for count, close in zip(counts, closes, strict=True) if not close)
        assert all(low <= count - close <= high for count, close in zip(counts, closes, strict=True) if close)
        assert 0 < sum(closes) <= lacking, (counts, closes)
