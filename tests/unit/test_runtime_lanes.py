"""A batch splits into lanes by key: every record once, each key in one lane, in order."""

from __future__ import annotations

from aiokafka.structs import ConsumerRecord
from hypothesis import given
from hypothesis import strategies as st

from workers.runtime.consumer import key_lanes


def _record(partition: int, offset: int, key: bytes | None) -> ConsumerRecord[bytes, bytes]:
    return ConsumerRecord("t", partition, offset, 0, 0, key, b"{}", None, 0, 0, [])


keys = st.one_of(st.none(), st.sampled_from([b"cus_a", b"cus_b", b"cus_c", b"cus_d", b"cus_e"]))


@given(st.lists(st.tuples(st.integers(0, 2), keys), max_size=60), st.integers(1, 4))
def test_lanes_keep_every_record_and_each_keys_order(
    batch: list[tuple[int, bytes | None]], lanes: int
) -> None:
    records = [_record(partition, offset, key) for offset, (partition, key) in enumerate(batch)]
    groups = key_lanes(records, lanes)

    assert len(groups) <= lanes and all(groups)
    assert sorted(r.offset for g in groups for r in g) == [r.offset for r in records]
    for key in {r.key for r in records}:
        holding = [g for g in groups if any(r.key == key for r in g)]
        assert len(holding) == 1  # a key never spans two concurrent transactions
        assert [r for r in holding[0] if r.key == key] == [r for r in records if r.key == key]


def test_one_lane_is_the_batch_as_fetched() -> None:
    records = [_record(p, o, k) for o, (p, k) in enumerate([(0, b"a"), (1, b"b"), (0, None)])]
    assert key_lanes(records, 1) == [records]
    assert key_lanes([], 2) == []
