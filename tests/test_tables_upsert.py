"""Which version of each key a primary-keyed table keeps (`tables.upsert.latest`): table-driven."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from apilake.errors import TableError
from apilake.tables.plan import Partition, RawObject
from apilake.tables.upsert import latest

Pages = dict[str, list[tuple[str, int, list[dict[str, Any]]]]]  # date → (unit, page, records)


def kept(pages: Pages, key: tuple[str, ...] = ("id",), cursor: str | None = "at") -> list[dict[str, Any]]:
    """The records `latest` keeps, in the order they were landed."""
    bodies: dict[str, bytes] = {}
    partitions = []
    for date, found in pages.items():
        objects = []
        for unit, page, records in found:
            name = f"{date}/{unit}/page-{page}.json"
            bodies[name] = json.dumps(records).encode()
            objects.append(RawObject(name, len(bodies[name]), "", "run", (), "json", None, key, cursor, unit, page))
        partitions.append(Partition("ns", "t", date, tuple(sorted(objects, key=lambda o: o.key))))

    @contextmanager
    def opener(obj: RawObject, date: str) -> Iterator[io.BytesIO]:
        yield io.BytesIO(bodies[obj.key])

    rows = latest("ns.t", partitions, opener).rows
    return [r for name in sorted(rows) for i, r in enumerate(json.loads(bodies[name])) if i in rows[name]]


A1, A2, A3 = (
    {"id": 1, "at": "2026-01-01T00:00:00Z", "v": "a1"},
    {"id": 1, "at": "2026-01-02T00:00:00Z", "v": "a2"},
    {"id": 1, "at": "2026-01-03T00:00:00+00:00", "v": "a3"},
)
B1 = {"id": 2, "at": "2026-01-01T00:00:00Z", "v": "b1"}


@pytest.mark.parametrize(
    ("pages", "cursor", "want"),
    [
        pytest.param({"2026-01-01": [("u", 1, [A1, B1])], "2026-01-02": [("u", 1, [A2])]}, "at", [B1, A2], id="a later date wins"),
        pytest.param({"2026-01-01": [("u", 1, [A3])], "2026-01-02": [("u", 1, [A2])]}, "at", [A2], id="the later date wins over a newer cursor"),
        pytest.param({"2026-01-01": [("u", 1, [A3, A2])]}, "at", [A3], id="within a date, the newest cursor (another offset, parsed)"),
        pytest.param({"2026-01-01": [("u", 2, [A3]), ("u", 1, [A2])]}, "at", [A3], id="the newest cursor on an earlier page"),
        pytest.param({"2026-01-01": [("u", 1, [A1]), ("u", 10, [A3]), ("u", 2, [A2])]}, None, [A3], id="no cursor: the last page (10 after 2)"),
        pytest.param({"2026-01-01": [("u", 1, [A2, A1])]}, None, [A1], id="no cursor: the last in its page"),
        pytest.param({"2026-01-01": [("u", 1, [{"id": 1, "v": "x"}, A1])]}, "at", [A1], id="a record with no cursor comes first"),
        pytest.param({"2026-01-01": [("u", 1, [{"id": "1", **B1}])], "2026-01-02": [("u", 1, [])]}, "at", [{"id": "1", **B1}], id="an empty page"),
        pytest.param(
            {"2026-01-01": [("u", 1, [{"id": 1, "m": {"n": 9}}, {"id": 1, "m": {"n": 10}}, {"id": 1, "m": {"n": 2}}])]},
            "m.n",
            [{"id": 1, "m": {"n": 10}}],
            id="a nested number cursor",
        ),
        pytest.param(
            {"2026-01-01": [("u", 1, [{"id": 1, "at": "2026-01-02T00:00:00"}, {"id": 1, "at": "2026-01-01T00:00:00"}])]},
            "at",
            [{"id": 1, "at": "2026-01-02T00:00:00"}],
            id="date-times without a zone",
        ),
        pytest.param({"2026-01-01": [("u", 1, [{"id": 1, "at": "20"}, {"id": 1, "at": "3"}])]}, "at", [{"id": 1, "at": "20"}], id="numbers as text"),
        pytest.param({"2026-01-01": [("u", 1, [{"id": 1, "b": 5}, {"id": 1, "at": 3}])]}, "at || b", [{"id": 1, "b": 5}], id="any JMESPath"),
        pytest.param({"2026-01-01": [("u", 1, [A2, {"id": 1, "v": "no cursor"}])]}, "m.n", [{"id": 1, "v": "no cursor"}], id="no such field: by position"),
    ],
)
def test_the_latest_version_of_each_key(pages: Pages, cursor: str | None, want: list[dict[str, Any]]) -> None:
    assert kept(pages, cursor=cursor) == want


def test_a_compound_key_and_keys_compared_as_text() -> None:
    pages: Pages = {"2026-01-01": [("u", 1, [{"id": 1, "r": "x", "v": 1}, {"id": 1, "r": "y", "v": 2}, {"id": "1", "r": "x", "v": 3}])]}
    assert kept(pages, key=("id", "r"), cursor=None) == [{"id": 1, "r": "y", "v": 2}, {"id": "1", "r": "x", "v": 3}]


@pytest.mark.parametrize(
    ("records", "says"),
    [
        ([{"v": 1}], "without its primary key column 'id'"),
        ([{"id": 1}, {"id": None}], "1 record(s) with no value in primary key column 'id'"),
        ([{"id": {"a": 1}}], "primary key column 'id' holds struct"),
    ],
)
def test_a_record_without_a_usable_key_fails_the_table(records: list[dict[str, Any]], says: str) -> None:
    with pytest.raises(TableError, match=f"table ns.t: 2026-01-01/u/page-1.json: .*{says.replace('(', '.').replace(')', '.')}"):
        kept({"2026-01-01": [("u", 1, records)]})


def test_endpoints_of_one_table_with_different_keys_fail_it() -> None:
    objects = [RawObject(f"{i}.json", 2, "", "run", (), "json", None, key, None, "u", 0) for i, key in enumerate([("id",), ()])]

    def opener(obj: RawObject, date: str) -> Any:
        raise AssertionError("nothing is read")

    with pytest.raises(TableError, match=r"table ns.t: its endpoints give it different table.primary_key values \(\['id'\] and \[\]\)"):
        latest("ns.t", [Partition("ns", "t", "2026-01-01", tuple(objects))], opener)
