"""The in-flight record: what a worker notes as it serves, read back as its supervisor would."""

from __future__ import annotations

from ipc.contract import inflight


def test_what_is_begun_and_not_ended_reads_back(tmp_path):
    path = str(tmp_path / "0-1.inflight")
    record = inflight.Record(path)
    first = record.begin("poison", "1", "req-7", 1234)
    second = record.begin("good", "2", "#3", 10)
    record.end(second)
    assert inflight.read(path) == [inflight.Request("poison", "1", "req-7", 1234)]
    record.end(first)
    assert inflight.read(path) == []
    record.close()


def test_long_texts_are_cut_to_their_field_and_a_full_record_notes_no_more(tmp_path):
    path = str(tmp_path / "r")
    record = inflight.Record(path)
    handles = [record.begin("m" * 100, "9" * 30, "é" * 40, i) for i in range(inflight.ENTRIES + 5)]
    assert handles[-5:] == [None] * 5
    requests = inflight.read(path)
    assert len(requests) == inflight.ENTRIES
    assert requests[0].model == "m" * 64 and requests[0].version == "9" * 16
    assert len(requests[0].request_id.encode()) <= 32  # a cut through a character reads as a replacement
    record.end(None)  # a request the full record did not note ends harmlessly
    record.close()


def test_no_record_or_not_a_record_reads_as_nothing(tmp_path):
    assert inflight.read(str(tmp_path / "missing")) == []
    (tmp_path / "junk").write_bytes(b"x" * inflight.SIZE)
    assert inflight.read(str(tmp_path / "junk")) == []


def test_a_request_inside_its_models_call_reads_as_such(tmp_path):
    path = str(tmp_path / "r")
    record = inflight.Record(path)
    waiting, calling = record.begin("good", "1", "#1", 5), record.begin("poison", "1", "p-1", 9)
    with record.calling(calling):
        assert [(r.model, r.in_model) for r in inflight.read(path)] == [("good", False), ("poison", True)]
    assert not any(r.in_model for r in inflight.read(path))
    record.end(waiting)
    record.end(calling)
    record.close()
