"""The behaviour every pin state backend shares (ipfs-cluster's ``State`` contract), as a pytest
class to subclass::

    import pytest
    from rubix_integration.testing.pin_state_contract import PinStateContract

    class TestMyPinState(PinStateContract):
        backend_name = "mystate"          # the name registered for the pin_state role
        load_plugins = ("myplugin",)      # entry points to load (None: all; () none)

        @pytest.fixture
        def contract_pin_state(self):
            state = ...                   # an empty state, for this test only
            yield state
            state.close()

The suite checks that the backend is registered for the ``pin_state`` role under
``backend_name`` and that the state it is given is an instance of that class.
"""

from __future__ import annotations

import hashlib
import io
import json
import time
from collections.abc import Sequence
from typing import Any, ClassVar

import pytest

from rubix_integration.codecs import CID, DAG_PB, RAW, SHA2_256, encode_multihash
from rubix_integration.errors import InvalidPinError, PinNotFoundError
from rubix_integration.pins import Pin, PinStateBackend

__all__ = ["PinStateContract", "contract_cid", "full_pin"]


def contract_cid(n: int, *, codec: int = RAW) -> str:
    """A valid CIDv1 (base32) made from ``n``."""
    digest = hashlib.sha256(f"pin-state-contract {n}".encode()).digest()
    return str(CID(1, codec, encode_multihash(SHA2_256, digest)))


def full_pin(n: int) -> Pin:
    """A pin with every field set."""
    return Pin(
        cid=contract_cid(n), type="pin", allocations=("12D3KooWPeerA", "12D3KooWPeerB"),
        max_depth=-1, reference=contract_cid(n + 1_000_000, codec=DAG_PB),
        timestamp="2024-01-15T10:30:45.123456789Z", replication_factor_min=2,
        replication_factor_max=3, name=f"pin {n} ✓", shard_size=1048576,
        user_allocations=("12D3KooWPeerA",), expire_at="2030-06-01T00:00:00Z",
        metadata={"owner": "ops", "note": "a=b, c"}, pin_update=contract_cid(n + 2_000_000),
        origins=("/ip4/127.0.0.1/tcp/4001/p2p/12D3KooWPeerA",))


class PinStateContract:
    """The pin state contract; subclass it as ``Test…`` and provide ``contract_pin_state``."""

    backend_name: ClassVar[str] = ""
    load_plugins: ClassVar[Sequence[str] | None] = ()
    plugins: ClassVar[Sequence[object]] = ()
    #: How many pins the streaming tests write (fewer for a slow backend).
    many: ClassVar[int] = 2500

    @pytest.fixture
    def contract_pin_state(self) -> Any:  # pragma: no cover - provided by the subclass
        raise NotImplementedError("provide a contract_pin_state fixture")

    @pytest.fixture
    def state(self, contract_pin_state: PinStateBackend) -> PinStateBackend:
        return contract_pin_state

    # --- registration --------------------------------------------------------------------------

    def test_backend_is_registered_for_the_pin_state_role(self, state: PinStateBackend) -> None:
        from rubix_integration._plugins import Plugins

        found = Plugins(load_plugins=self.load_plugins, extra=self.plugins).backends("pin_state")
        assert self.backend_name in found, sorted(found)
        assert isinstance(state, found[self.backend_name])
        assert isinstance(state, PinStateBackend)

    # --- reads of an empty state ---------------------------------------------------------------

    def test_empty_state(self, state: PinStateBackend) -> None:
        cid = contract_cid(1)
        assert list(state.list()) == []
        assert state.count() == 0
        assert state.has(cid) is False
        with pytest.raises(PinNotFoundError, match="pin is not part of the pinset") as info:
            state.get(cid)
        assert info.value.cid == cid
        assert info.value.backend == state.name

    # --- add, get, has, rm ---------------------------------------------------------------------

    def test_add_then_get_gives_back_every_field(self, state: PinStateBackend) -> None:
        pin = full_pin(1)
        state.add(pin)
        got = state.get(pin.cid)
        assert got == pin
        assert got.mode == "recursive"
        assert got.to_ndjson() == pin.to_ndjson()
        assert state.has(pin.cid)
        assert state.count() == 1

    def test_add_is_an_upsert(self, state: PinStateBackend) -> None:
        pin = full_pin(2)
        state.add(pin)
        state.add(Pin(cid=pin.cid, name="renamed", max_depth=0))
        got = state.get(pin.cid)
        assert (got.name, got.mode, got.allocations, got.metadata) == ("renamed", "direct", (),
                                                                        {})
        assert [p.cid for p in state.list()] == [pin.cid]

    def test_rm_removes_and_a_missing_rm_is_no_error(self, state: PinStateBackend) -> None:
        keep, gone = full_pin(3), full_pin(4)
        state.add(keep)
        state.add(gone)
        state.rm(gone.cid)
        state.rm(gone.cid)
        state.rm(contract_cid(99))
        assert not state.has(gone.cid)
        with pytest.raises(PinNotFoundError):
            state.get(gone.cid)
        assert [p.cid for p in state.list()] == [keep.cid]
        state.add(gone)  # back after a removal
        assert state.get(gone.cid) == gone
        assert state.count() == 2

    def test_cids_are_keyed_by_their_canonical_text(self, state: PinStateBackend) -> None:
        from rubix_integration.codecs import parse_cid

        pin = Pin(cid=contract_cid(5))
        state.add(pin)
        other_base = parse_cid(pin.cid).encode("base58btc")
        assert other_base != pin.cid
        assert state.has(other_base)
        assert state.get(other_base).cid == pin.cid
        state.rm(other_base)
        assert not state.has(pin.cid)

    # --- validation ----------------------------------------------------------------------------

    @pytest.mark.parametrize(("change", "message"), [
        ({"cid": "QmNotACid"}, "cid: 'QmNotACid' is not a valid CID"),
        ({"cid": ""}, "cid: missing"),
        ({"type": "bogus-pin"}, "unknown pin type 'bogus-pin'"),
        ({"replication_factor_min": 3, "replication_factor_max": 2}, "is greater than"),
        ({"replication_factor_min": -2}, "replication factors"),
        ({"max_depth": -5}, "max_depth"),
        ({"reference": "not-a-cid"}, "reference: 'not-a-cid' is not a valid CID"),
        ({"timestamp": "yesterday"}, "timestamp: 'yesterday' is not an RFC 3339 time"),
        ({"metadata": {"k": 1}}, "metadata"),
        ({"allocations": ("a,b",)}, "allocations"),
    ])
    def test_invalid_pins_are_refused_with_a_clear_error(
            self, state: PinStateBackend, change: dict[str, Any], message: str) -> None:
        from dataclasses import replace

        bad = replace(full_pin(6), **change)
        with pytest.raises(InvalidPinError, match=message) as info:
            state.add(bad)
        assert info.value.backend == state.name
        with pytest.raises(InvalidPinError), state.batch() as batch:
            batch.add(bad)
        assert state.count() == 0

    def test_get_of_a_malformed_cid_is_an_invalid_pin_error(self, state: PinStateBackend) -> None:
        with pytest.raises(InvalidPinError, match="not a valid CID"):
            state.get("definitely not a cid")

    # --- list ----------------------------------------------------------------------------------

    def test_list_streams_every_pin_in_a_stable_order_and_resumes(
            self, state: PinStateBackend) -> None:
        pins = [Pin(cid=contract_cid(n), name=f"n{n}") for n in range(self.many)]
        with state.batch(max_batch_size=1000) as batch:
            for pin in pins:
                batch.add(pin)
        first = [p.cid for p in state.list(page_size=97)]
        assert sorted(first) == sorted(p.cid for p in pins)
        assert len(set(first)) == self.many
        assert [p.cid for p in state.list(page_size=1000)] == first
        middle = first[self.many // 2]
        assert [p.cid for p in state.list(after=middle, page_size=50)] == \
            first[self.many // 2 + 1:]
        stream = state.list(page_size=10)
        assert next(stream).cid == first[0]  # a generator: nothing more was read yet
        stream.close()
        assert state.count() == self.many

    # --- batching ------------------------------------------------------------------------------

    def test_batch_writes_land_on_commit_only(self, state: PinStateBackend) -> None:
        batch = state.batch(max_batch_size=100, max_batch_age=60)
        batch.add(full_pin(7))
        assert batch.pending == 1
        assert not state.has(full_pin(7).cid)
        assert not batch.has(full_pin(7).cid)
        assert batch.commit() == 1
        assert state.get(full_pin(7).cid) == full_pin(7)
        assert batch.commit() == 0

    def test_batch_flushes_by_size(self, state: PinStateBackend) -> None:
        batch = state.batch(max_batch_size=3, max_batch_age=60)
        for n in range(7):
            batch.add(Pin(cid=contract_cid(n)))
        assert state.count() == 6
        assert batch.pending == 1
        assert batch.commits == 2
        batch.commit()
        assert state.count() == 7

    def test_batch_flushes_by_age(self, state: PinStateBackend) -> None:
        batch = state.batch(max_batch_size=1000, max_batch_age=0.2)
        batch.add(Pin(cid=contract_cid(1)))
        assert state.count() == 0
        time.sleep(0.25)
        batch.add(Pin(cid=contract_cid(2)))
        assert state.count() == 2
        assert batch.pending == 0

    def test_batch_context_manager_commits_or_discards(self, state: PinStateBackend) -> None:
        with state.batch() as batch:
            batch.add(Pin(cid=contract_cid(1)))
            batch.add(Pin(cid=contract_cid(2)))
            batch.rm(contract_cid(2))  # the last write of a CID wins
            batch.add(Pin(cid=contract_cid(3), name="first"))
            batch.add(Pin(cid=contract_cid(3), name="second"))
        assert sorted(p.cid for p in state.list()) == sorted([contract_cid(1), contract_cid(3)])
        assert state.get(contract_cid(3)).name == "second"
        with pytest.raises(RuntimeError, match="boom"), state.batch() as batch:
            batch.add(Pin(cid=contract_cid(4)))
            batch.rm(contract_cid(1))
            raise RuntimeError("boom")
        assert not state.has(contract_cid(4))
        assert state.has(contract_cid(1))

    def test_batch_removals(self, state: PinStateBackend) -> None:
        for n in range(5):
            state.add(Pin(cid=contract_cid(n)))
        with state.batch() as batch:
            for n in range(0, 5, 2):
                batch.rm(contract_cid(n))
            batch.rm(contract_cid(77))  # missing: no error
        assert sorted(p.cid for p in state.list()) == sorted([contract_cid(1), contract_cid(3)])

    # --- marshal, unmarshal, migrate -----------------------------------------------------------

    def test_marshal_unmarshal_round_trip_adds_without_clearing(
            self, state: PinStateBackend) -> None:
        pins = [full_pin(n) for n in range(20)]
        state.apply(pins)
        before = state.summary()
        dump = io.StringIO()
        assert state.marshal(dump) == 20
        for pin in pins[:10]:
            state.rm(pin.cid)
        extra = Pin(cid=contract_cid(500))
        state.add(extra)
        dump.seek(0)
        assert state.unmarshal(dump) == 20
        assert state.has(extra.cid)  # not cleared
        state.rm(extra.cid)
        assert state.summary() == before
        assert state.get(pins[3].cid) == pins[3]

    def test_unmarshal_refuses_what_marshal_did_not_write(self, state: PinStateBackend) -> None:
        with pytest.raises(InvalidPinError, match="line 1: not a marshalled pin state"):
            state.unmarshal(io.StringIO('{"cid": "x"}\n'))
        assert state.count() == 0

    def test_migrate_reads_both_ipfs_cluster_export_shapes(self, state: PinStateBackend) -> None:
        v0 = "QmYwAPJzv5CZsnA625s3Xf2nemtYgPpHdWEz79ojWnPbdG"
        old = {"cid": {"/": v0}, "type": 1, "allocations": [], "max_depth": -1,
               "reference": None, "replication_factor_min": -1, "replication_factor_max": -1,
               "name": "old", "shard_size": 0, "user_allocations": None, "metadata": None}
        new = full_pin(8).to_json()
        text = json.dumps(old) + "\n" + json.dumps(new) + "\n"
        assert state.migrate(io.StringIO(text)) == 2
        assert state.get(v0).name == "old"
        assert state.get(v0).replication_factor_min == -1
        assert state.get(full_pin(8).cid) == full_pin(8)

    # --- health --------------------------------------------------------------------------------

    def test_health_writes_reads_and_removes_a_probe(self, state: PinStateBackend) -> None:
        state.add(full_pin(9))
        took = state.health()
        assert took >= 0
        assert [p.cid for p in state.list()] == [full_pin(9).cid]
