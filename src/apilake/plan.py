"""The planner: a job and its run dates expand into units. Pure: no network, no clock, no files.

A unit is one endpoint, for one date, for one matrix combination. It is a small, plain value
(strings and tuples) that serialises to JSON, so it can run in this process or on a worker.
A fan-out child's units depend on its parent's data: `expand_children` makes them, still pure,
from the parent's pages, which the executor hands over once the parent has landed.
"""

from __future__ import annotations

import datetime as dt
import itertools
import json
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import Any
from urllib.parse import quote, urlencode

import jmespath

from apilake import keys
from apilake.collisions import KeyClaims
from apilake.errors import JobFileError
from apilake.incremental import UNOPENED, Wanted, Window, kind_of, window_key
from apilake.jobfile import KINDS_WITH_KEY, Endpoint, Incremental, Job, OffsetPaging, PageNumberPaging, Source, parents
from apilake.templates import Value, quote_segment, render, render_head, sanitize_key
from apilake.vocabulary import EndpointKind


@dataclass(frozen=True, slots=True)
class Unit:
    source: str
    endpoint: str
    kind: EndpointKind
    date: str  # ISO date the unit asks for (run date minus the endpoint's lag)
    variables: tuple[tuple[str, str], ...]  # this unit's matrix combination (and fan-out value)
    url: str  # base URL + rendered path, no query (report: the create request's)
    params: tuple[tuple[str, str], ...]
    key: str  # json, file: the object key (of page 1); bulk, report: the key template, rendered per file
    paginate: str = "none"  # the style's name; its settings stay on the endpoint
    method: str = "GET"
    body: str | None = None  # POST: the rendered JSON body
    run_date: str = ""  # the run date this unit belongs to (date plus the endpoint's lag)
    headers: tuple[tuple[str, str], ...] = ()  # json: the endpoint's own headers, rendered (`{cursor}`)

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
        for name in ("variables", "params", "headers"):
            fields[name] = tuple(tuple(pair) for pair in fields[name])
        return cls(**fields)


def encode_query(params: Iterable[tuple[str, str]]) -> str:
    """Query string with `+` and `,` kept literal: the vendor joins multi-valued parameters with `+`."""
    return urlencode(list(params), quote_via=lambda s, *_: quote(s, safe="+,:"))


def plan(job: Job, dates: Iterable[dt.date], only: Iterable[str] = (), windows: Mapping[str, Window] = {}) -> list[Unit]:
    """Every unit of every selected endpoint for every date, in a stable order.

    `windows` holds the window of each incremental unit (`incremental.open_windows`, by
    `incremental.window_key`); one without is planned as not opened yet (`status`).

    Children of a fan-out (`for_each`) are not here: their units come from their parent's
    pages (`expand_children`) once it has landed. Selecting a child selects its parents too
    (a parent that landed before is skipped, and its pages are read from the lake).
    """
    dates = list(dates)
    units = []
    for source, endpoint in selected(job, only):
        if endpoint.for_each is None:
            for date in dates:
                units.extend(expand(source, endpoint, date, windows=windows))
    KeyClaims().claim(units)
    return units


def incremental_units(job: Job, dates: Iterable[dt.date], only: Iterable[str] = ()) -> list[Wanted]:
    """The incremental units `plan` will make, whose windows must be opened first."""
    return [
        Wanted(source.name, endpoint, variables, date.isoformat())
        for source, endpoint in selected(job, only)
        if endpoint.incremental is not None and endpoint.for_each is None
        for date in dates
        for variables in combinations(endpoint)
    ]


def incremental_children(source: Source, child: Endpoint, run_date: dt.date, pages: Iterable[Any]) -> list[Wanted]:
    """The incremental units of a fan-out child from its parent's pages, whose windows must be
    opened first (one cursor per parent value); none when the child is not incremental."""
    if child.incremental is None:
        return []
    return [Wanted(source.name, child, v, run_date.isoformat()) for v in combinations(child, fan_out_values(child, pages))]


def selected(job: Job, only: Iterable[str] = ()) -> list[tuple[Source, Endpoint]]:
    """The endpoints `--only` asks for (all without it), with the fan-out parents they need."""
    only = set(only)
    known = {e.name for s in job.sources for e in s.endpoints} | {s.name for s in job.sources}
    unknown = sorted(only - known)
    if unknown:
        raise JobFileError(f"--only {unknown[0]}: no endpoint or source of that name (known: {', '.join(sorted(known))})")
    wanted: set[tuple[str, str]] = set()
    for source in job.sources:
        for endpoint in source.endpoints:
            if not only or endpoint.name in only or source.name in only:
                wanted |= {(source.name, e.name) for e in [endpoint, *parents(source, endpoint)]}
    return [(s, e) for s in job.sources for e in s.endpoints if (s.name, e.name) in wanted]


def children(job: Job, only: Iterable[str] = ()) -> list[tuple[Source, Endpoint]]:
    """The selected fan-out children (endpoints with `for_each`), parents before their children."""
    found = [(s, e) for s, e in selected(job, only) if e.for_each is not None]
    return sorted(found, key=lambda se: len(parents(*se)))


def pending_children(job: Job, dates: Iterable[dt.date], only: Iterable[str] = ()) -> list[str]:
    """For a dry run: each fan-out child and date, pending on its parent (its units are not known yet)."""
    lines = []
    for source, child in children(job, only):
        assert child.for_each is not None
        for run_date in dates:
            parent = f"{source.name}/{child.for_each.endpoint}/{run_date - dt.timedelta(days=_lag(source, child.for_each.endpoint))}"
            lines.append(
                f"{source.name}/{child.name}/{run_date - dt.timedelta(days=child.lag)}\n    pending: one unit per "
                f"{child.for_each.values} in {parent} (as {{{child.for_each.as_}}})"
            )
    return lines


def _lag(source: Source, endpoint: str) -> int:
    return next(e.lag for e in source.endpoints if e.name == endpoint)


def expand_children(source: Source, child: Endpoint, run_date: dt.date, pages: Iterable[Any], windows: Mapping[str, Window] = {}) -> list[Unit]:
    """The units of a fan-out child for one run date, from every page of its parent for that date
    (`windows`: as for `plan`)."""
    units = expand(source, child, run_date, fan_out=fan_out_values(child, pages), windows=windows)
    KeyClaims().claim(units)
    return units


def fan_out_values(child: Endpoint, pages: Iterable[Any]) -> list[str]:
    """The child's `for_each.values` (JMESPath) over each page of its parent, de-duplicated in
    order of appearance: each, combined with the child's matrix, is a unit."""
    assert child.for_each is not None
    expression = jmespath.compile(child.for_each.values)
    values: dict[str, None] = {}
    for page in pages:
        found = expression.search(page)
        for value in found if isinstance(found, list) else [found]:
            if value is not None and not isinstance(value, (dict, list)):
                values[_text(value)] = None
    return list(values)


def combinations(endpoint: Endpoint, fan_out: list[str] | None = None) -> list[tuple[tuple[str, str], ...]]:
    """Each unit's variables: one matrix combination (and fan-out value) per unit."""
    matrix: dict[str, list[Any]] = dict(endpoint.matrix)
    if endpoint.for_each is not None:
        matrix = {endpoint.for_each.as_: fan_out or [], **matrix}
    axes = list(matrix)
    combos = itertools.product(*(matrix[a] for a in axes)) if axes else [()]
    return [tuple((axis, _text(value)) for axis, value in zip(axes, combo, strict=True)) for combo in combos]


def expand(source: Source, endpoint: Endpoint, run_date: dt.date, fan_out: list[str] | None = None, windows: Mapping[str, Window] = {}) -> list[Unit]:
    """The units of one endpoint for one run date: one per matrix combination (and fan-out value)."""
    date = run_date - dt.timedelta(days=endpoint.lag)
    key_template = endpoint_key(endpoint)
    request = endpoint.create if endpoint.create is not None else endpoint
    method = request.method
    units = []
    for variables in combinations(endpoint, fan_out):
        values: dict[str, Value] = {"source": source.name, "endpoint": endpoint.name, "date": date, **dict(variables)}
        path_variables = dict(variables)
        window = None
        if endpoint.incremental is not None:
            window = windows.get(window_key(source.name, endpoint.name, variables, run_date.isoformat()), UNOPENED)
            values.update(window.values())
            path_variables.update(window.values())
        url = join_url(source.base_url, request.path or "", values, path_variables)
        params = render_params(request.params, values) + cursor_params(endpoint.incremental, window) + first_page_params(endpoint)
        key = sanitize_key(render(key_template, values, escape_slashes=True)) if endpoint.kind in KINDS_WITH_KEY else key_template
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
                paginate=endpoint.paginate_type,
                method=method,
                body=render_body(request.body, values, native=cursor_native(endpoint, values)),
                run_date=run_date.isoformat(),
                headers=tuple((name, render(value, values)) for name, value in endpoint.headers.items()),
            )
        )
    return units


def endpoint_key(endpoint: Endpoint) -> str:
    """An endpoint's key template: its own `key:`, or the default layout of its kind."""
    if endpoint.key:
        return endpoint.key
    if endpoint.kind not in KINDS_WITH_KEY:
        return keys.DEFAULT_BULK_KEY
    matrix = [*([endpoint.for_each.as_] if endpoint.for_each else []), *endpoint.matrix]
    key = keys.default_json_key(dict.fromkeys(matrix), keys.extension(endpoint.path) if endpoint.kind == "file" else f".{endpoint.format}")
    return key.replace("/dt={date}/", "/dt={date}/cursor={cursor}/") if endpoint.incremental is not None else key


def typed_file_key(unit: Unit, endpoint: Endpoint) -> tuple[str, bool]:
    """A file unit's key, and whether it still wants an extension from the answer's Content-Type.

    Only a default key whose endpoint path has no extension takes one: from the unit's own URL
    (a placeholder in the path may hold it), else, once the vendor answers, from the Content-Type."""
    if endpoint.key or keys.extension(endpoint.path):
        return unit.key, False
    extension = keys.url_extension(unit.url)
    return unit.key + extension, not extension


def landing_keys(unit: Unit, endpoint: Endpoint) -> list[str]:
    """Every key a JSON or file unit may have landed at (page 1): one, but a file's whose
    extension comes from the Content-Type may be any of `keys.typed_keys`."""
    if unit.kind != "file":
        return [unit.key]
    key, typed = typed_file_key(unit, endpoint)
    return keys.typed_keys(key) if typed else [key]


def owned_prefixes(job: Job, only: Iterable[str] = ()) -> list[str]:
    """The key prefixes a run of the job writes under: each selected endpoint's key template up to
    its first placeholder other than {source} and {endpoint}, cut back to a whole folder. Nested
    ones are folded into the outer; a template that starts with another placeholder owns the
    whole destination (`""`)."""
    found = set()
    for source, endpoint in selected(job, only):
        head = render_head(endpoint_key(endpoint), {"source": source.name, "endpoint": endpoint.name}, escape_slashes=True)
        folder = head.rpartition("/")[0]
        found.add(sanitize_key(folder) + "/" if folder.strip("/.") else "")
    return sorted(p for p in found if not any(p != q and p.startswith(q) for q in found))


def join_url(base_url: str, path: str, values: Mapping[str, Value], variables: Mapping[str, str]) -> str:
    """`base_url` + the rendered path; variable values are URL-quoted so they stay one segment,
    never a dot segment."""
    path_values = {**values, **{k: quote_segment(v) for k, v in variables.items()}}
    return base_url.rstrip("/") + "/" + render(path, path_values).lstrip("/")


def first_page_params(endpoint: Endpoint) -> tuple[tuple[str, str], ...]:
    """Offset and page-number paging ask for their first page explicitly (the limit is a must)."""
    spec = endpoint.paginate
    if isinstance(spec, OffsetPaging):
        return ((spec.offset_param, str(spec.start)), (spec.limit_param, str(spec.limit)))
    if isinstance(spec, PageNumberPaging):
        return ((spec.page_param, str(spec.start)),)
    return ()


def cursor_params(spec: Incremental | None, window: Window | None) -> tuple[tuple[str, str], ...]:
    """`param` and `end_param`: where the window goes into the query."""
    if spec is None or window is None:
        return ()
    return tuple((name, value) for name, value in ((spec.param, window.start), (spec.end_param, window.end)) if name is not None)


def cursor_native(endpoint: Endpoint, values: Mapping[str, Value]) -> dict[str, Any]:
    """A body string that is just `{cursor}` or `{cursor_end}` of a number cursor is sent as a
    JSON number (`{"start_time": 1764770000}`), as such APIs expect."""
    spec = endpoint.incremental
    if spec is None or kind_of(spec) != "number":
        return {}
    return {name: int(str(values[name])) for name in ("cursor", "cursor_end") if str(values.get(name, "")).isdigit()}


def render_params(params: Mapping[str, Any], values: Mapping[str, Value]) -> tuple[tuple[str, str], ...]:
    return tuple((name, _render_param(value, values)) for name, value in params.items())


def render_body(body: Any, values: Mapping[str, Value], native: Mapping[str, Any] = {}) -> str | None:
    """A POST body as JSON text, its strings rendered as templates (None: no body); a string that
    is just `{name}` of a `native` value becomes that value."""
    if body is None:
        return None

    def fill(node: Any) -> Any:
        if isinstance(node, dict):
            return {k: fill(v) for k, v in node.items()}
        if isinstance(node, list):
            return [fill(v) for v in node]
        if isinstance(node, str) and node.startswith("{") and node.endswith("}") and node[1:-1] in native:
            return native[node[1:-1]]
        return render(node, values) if isinstance(node, str) else node

    return json.dumps(fill(body), separators=(",", ":"), sort_keys=False)


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
