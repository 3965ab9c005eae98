"""The lease's plain data: claim keys sort by time, and one read sorts the other claims into older,
younger and stale (expired, or an earlier try of our own task)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from airflow_mlops.core import lease

pytestmark = pytest.mark.unit

NOW = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)
ME = "m__train/manual__1/promote/aaaaaaaaaaaa"


def claim(owner: str, at: datetime, token: str) -> tuple[str, str]:
    return lease.claim_key(at, token), lease.claim_value(owner, at)


def test_keys_sort_by_claim_time_then_token() -> None:
    early, late = NOW, NOW + timedelta(microseconds=1)
    keys = [lease.claim_key(late, "000000000000"), lease.claim_key(early, "ffffffffffff"),
            lease.claim_key(early, "000000000000")]
    assert sorted(keys) == [keys[2], keys[1], keys[0]]
    assert all(k.startswith("airflow_mlops.lease.") for k in keys)


def test_standing_sorts_the_other_claims() -> None:
    mine = claim(ME, NOW, "aaaaaaaaaaaa")
    older = claim("other/run/promote/bbbbbbbbbbbb", NOW - timedelta(seconds=1), "bbbbbbbbbbbb")
    younger = claim("other/run2/rollback/cccccccccccc", NOW + timedelta(seconds=1), "cccccccccccc")
    expired = claim("dead/run/promote/dddddddddddd", NOW - lease.TTL - timedelta(seconds=1), "dddddddddddd")
    my_dead_try = claim("m__train/manual__1/promote/eeeeeeeeeeee", NOW - timedelta(seconds=5), "eeeeeeeeeeee")
    tags = dict([mine, older, younger, expired, my_dead_try, ("airflow_mlops.audit.000001", "{}")])
    standing = lease.standing(tags, mine[0], ME, now=NOW)
    assert [c.key for c in standing.older] == [older[0]]
    assert [c.key for c in standing.younger] == [younger[0]]
    assert {c.key for c in standing.stale} == {expired[0], my_dead_try[0]}


def test_an_unreadable_claim_is_live_until_the_time_its_key_carries_is_past_the_ttl() -> None:
    key = lease.claim_key(NOW - timedelta(seconds=1), "ffffffffffff")
    [found] = lease.claims({key: "not json"})
    assert found.at == NOW - timedelta(seconds=1) and not found.expired(NOW)
    assert found.expired(NOW + lease.TTL)
    mine = claim(ME, NOW, "aaaaaaaaaaaa")
    assert [c.key for c in lease.standing(dict([mine, (key, "not json")]), mine[0], ME, now=NOW).older] == [key]
    [hand_made] = lease.claims({f"{lease.TAG_PREFIX}by-hand": "x"})
    assert hand_made.at is None and not hand_made.expired(NOW + timedelta(days=365)), "no time at all: kept"
