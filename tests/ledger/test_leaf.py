"""The state's leaf bytes, written out field by field, are exactly the canonical JSON."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from peerpower.crypto import canonical_unchecked
from peerpower.ledger.state import (
    Account,
    Contract,
    Contracts,
    Meta,
    OrderRec,
    Reading,
    Record,
    Settled,
    SlotRec,
    leaf_bytes,
)

text = st.text(max_size=12)  # any code point: quotes, backslashes, controls, non-ASCII
ints = st.integers(min_value=-(2**70), max_value=2**70)


def canonical(table: str, key: str, record: Record) -> bytes:
    return canonical_unchecked([table, key, record.to_json()])


records = st.one_of(
    st.builds(Meta, ints, ints, ints, ints, text),
    st.builds(
        Account,
        text,
        text,
        text,
        ints,
        ints,
        ints,
        st.sampled_from(["active", "suspended"]),
        ints,
        ints,
        st.none() | text,
        st.none() | text,
        st.none() | text,
    ),
    st.builds(OrderRec, text, text, text, text, ints, ints, text, ints, ints),
    st.builds(SlotRec, text, st.sampled_from(["open", "sealed", "cleared"]), ints, text),
    st.builds(
        Contracts,
        text,
        text,
        st.lists(
            st.builds(Contract, text, text, text, text, ints, ints, ints, ints, ints, ints),
            max_size=3,
        ).map(tuple),
    ),
    st.builds(
        Settled,
        text,
        ints,
        ints,
        ints,
        ints,
        ints,
        ints,
        ints,
        st.lists(text).map(tuple),
        st.booleans(),
    ),
)


@settings(max_examples=400)
@given(table=text, key=text, record=records)
def test_leaf_bytes_are_the_canonical_json(table: str, key: str, record: Record) -> None:
    assert leaf_bytes(table, key, record) == canonical(table, key, record)


def test_reading_and_odd_values() -> None:
    reading = Reading("s-1", "2026-08-18#24", 0, 2**63)
    assert leaf_bytes("readings", 'k"\\\u2028', reading) == canonical(
        "readings", 'k"\\\u2028', reading
    )
    # a bool where an int is declared is written as JSON's true, as the encoder does
    odd = Meta(True, False, 1, -1, "é")  # type: ignore[arg-type]
    assert leaf_bytes("meta", "chain", odd) == canonical("meta", "chain", odd)
