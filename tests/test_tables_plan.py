"""The pure table planner: unit values from unit ids, table names from templates."""

from __future__ import annotations

import pytest

from apilake.jobfile import Endpoint, EndpointTable, Source
from apilake.tables.plan import table_name, unit_values

MATRIX = Endpoint(name="e", kind="json", path="/x", matrix={"market": ["ios"], "product_id": [1]})
FAN = Endpoint(name="f", kind="json", path="/y", matrix={"country": ["US"]}, for_each={"endpoint": "e", "values": "ids", "as": "account_id"})
SOURCE = Source(name="dataai", base_url="http://127.0.0.1:9", endpoints=[MATRIX, FAN])


@pytest.mark.parametrize(
    "endpoint, combo, expected",
    [
        (MATRIX, "market=ios,product_id=1", {"market": "ios", "product_id": "1"}),
        (MATRIX, "market=a,b=c,product_id=x=y", {"market": "a,b=c", "product_id": "x=y"}),
        (FAN, "account_id=a1,country=US", {"account_id": "a1", "country": "US"}),
        (MATRIX, "", {}),
    ],
)
def test_unit_values(endpoint: Endpoint, combo: str, expected: dict[str, str]) -> None:
    assert unit_values(endpoint, combo) == expected


@pytest.mark.parametrize(
    "template, values, expected",
    [
        (None, {}, "e"),
        ("bulk_{file_kind}_{dimension}", {"file_kind": "metrics", "dimension": ""}, "bulk_metrics"),
        ("bulk_{file_kind}_{dimension}", {"file_kind": "dimensions", "dimension": "product_id"}, "bulk_dimensions_product_id"),
        ("{source}-{endpoint} by {market}", {"market": "google-play"}, "dataai_e_by_google_play"),
    ],
)
def test_table_name(template: str | None, values: dict[str, str], expected: str) -> None:
    endpoint = MATRIX.model_copy(update={"table": EndpointTable(name=template)}) if template else MATRIX
    assert table_name(SOURCE, endpoint, values) == expected
