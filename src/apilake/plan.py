"""The planner: a job and its run dates expand into units. Pure: no network, no clock, no files.

A unit is one endpoint, for one date, for one matrix combination. It is a small, plain value
(strings and tuples) that serialises to JSON, so it can run in this process or on a worker.
"""

from __future__ import annotations

import datetime as dt
import itertools
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import Any
from urllib.parse import quote, urlencode

from apilake import keys
from apilake.errors import JobFileError
from apilake.jobfile import Endpoint, Job, Source
from apilake.templates import Value, render, sanitize_key


@dataclass(frozen=True, slots=True)
class Unit:
    source: str
    endpoint: str
    kind: str  # "json" | "bulk"
    date: str  # ISO date the unit asks for (run date minus the endpoint's lag)
    variables: tuple[tuple[str, str], ...]  # this unit's matrix combination
    url: str  # base URL + rendered path, no query
    params: tuple[tuple[str, str], ...]
    key: str  # json: the object key (of page 1); bulk: the key template, rendered per file
    paginate: str = "none"

    @property
    def id(self) -> str:
        combo = ",".join(f"{k}={v}" for k, v in self.variables)
        return f"{self.source}/{self.endpoint}/{self.date}" + (f"/{combo}" if combo else "")

    @property
    def request_url(self) -> str:
        """The URL with its query string, as sent (for logs and dry runs; holds no auth header)."""
        return self.url + ("?" + encode_query(self.params) if self.params else "")

    def values(self) -> dict[str, Value]:
        """Template values of this unit (bulk keys are rendered per file with these)."""
        return {"source": self.source, "endpoint": self.endpoint, "date": dt.date.fromisoformat(self.date), **dict(self.variables)}

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Unit:
        fields = dict(data)
        for name in ("variables", "params"):
            fields[name] = tuple(tuple(pair) for pair in fields[name])
        return cls(**fields)


def encode_query(params: Iterable[tuple[str, str]]) -> str:
    """Query string with `+` and `,` kept literal: the vendor joins multi-valued parameters with `+`."""
    return urlencode(list(params), quote_via=lambda s, *_: quote(s, safe="+,:"))


def plan(job: Job, dates: Iterable[dt.date], only: Iterable[str] = ()) -> list[Unit]:
    """Every unit of every selected endpoint for every date, in a stable order."""
    only = set(only)
    known = {e.name for s in job.sources for e in s.endpoints} | {s.name for s in job.sources}
    unknown = sorted(only - known)
    if unknown:
        raise JobFileError(f"--only {unknown[0]}: no endpoint or source of that name (known: {', '.join(sorted(known))})")
    dates = list(dates)
    units = []
    for source in job.sources:
        for endpoint in source.endpoints:
            if only and endpoint.name not in only and source.name not in only:
                continue
            for date in dates:
                units.extend(expand(source, endpoint, date))
    _refuse_collisions(units)
    return units


def _refuse_collisions(units: list[Unit]) -> None:
    """Two units must never share an id or land on one key: the second would overwrite the first."""
    ids: dict[str, Unit] = {}
    keys: dict[str, Unit] = {}
    for unit in units:
        if unit.id in ids:
            raise JobFileError(f"two units are both {unit.id!r}: matrix values of one variable must differ as text")
        ids[unit.id] = unit
        if unit.kind == "json":
            if unit.key in keys:
                raise JobFileError(
                    f"units {keys[unit.key].id!r} and {unit.id!r} would both land on key {unit.key!r}; "
                    "put what tells them apart ({date}, matrix variables) into the endpoint's key"
                )
            keys[unit.key] = unit


def expand(source: Source, endpoint: Endpoint, run_date: dt.date) -> list[Unit]:
    """The units of one endpoint for one run date: one per matrix combination."""
    date = run_date - dt.timedelta(days=endpoint.lag)
    axes = list(endpoint.matrix)
    combos = itertools.product(*(endpoint.matrix[a] for a in axes)) if axes else [()]
    key_template = endpoint.key or (
        keys.default_json_key(endpoint.matrix) if endpoint.kind == "json" else keys.DEFAULT_BULK_KEY
    )
    units = []
    for combo in combos:
        variables = tuple((axis, _text(value)) for axis, value in zip(axes, combo))
        values: dict[str, Value] = {"source": source.name, "endpoint": endpoint.name, "date": date, **dict(variables)}
        path_values = {k: quote(str(v), safe="") if k in dict(variables) else v for k, v in values.items()}
        url = source.base_url.rstrip("/") + "/" + render(endpoint.path, path_values).lstrip("/")
        params = tuple((name, _render_param(value, values)) for name, value in endpoint.params.items())
        key = sanitize_key(render(key_template, values, escape_slashes=True)) if endpoint.kind == "json" else key_template
        units.append(
            Unit(
                source=source.name,
                endpoint=endpoint.name,
                kind=endpoint.kind,
                date=date.isoformat(),
                variables=variables,
                url=url,
                params=params,
                key=key,
                paginate=endpoint.paginate,
            )
        )
    return units


def file_key(unit: Unit, file_url: str) -> str:
    """The object key of one bulk file of a unit's listing."""
    values: dict[str, Value] = {**unit.values(), **keys.file_values(file_url, dt.date.fromisoformat(unit.date))}
    values["file_date"] = dt.date.fromisoformat(str(values["file_date"]))
    return sanitize_key(render(unit.key, values, escape_slashes=True, paths=("url_path",)))


def _render_param(value: object, values: Mapping[str, Value]) -> str:
    if isinstance(value, list):
        return "+".join(render(_text(v), values) for v in value)
    return render(_text(value), values)


def _text(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)
