"""Opening the job's Iceberg catalog: pyiceberg's own properties, passed through.

`tables.catalog` holds pyiceberg's catalog properties as pyiceberg documents them (`type: sql`
with `uri`, `type: glue`, `type: rest` with `uri` and credentials, ...), so every catalog
pyiceberg supports works without code here. A local lake needs none: a SQLite SQL catalog and
its warehouse live in the lake's `_apilake/tables/`. An S3 lake has no safe default (a catalog
file cannot be shared safely on S3), so it must name one.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from filelock import FileLock

from apilake.destinations import OWN_PREFIX
from apilake.errors import JobFileError, TableError
from apilake.jobfile import Job
from apilake.redact import Redactor

if TYPE_CHECKING:
    from pyiceberg.catalog import Catalog

TABLES_PREFIX = f"{OWN_PREFIX}tables/"
DEFAULT_NAME = "apilake"


def catalog_properties(job: Job, destination: str) -> tuple[str, dict[str, str]]:
    """(catalog name, pyiceberg properties) for the job's tables in `destination`. Pure."""
    settings = job.tables
    if settings is None:
        raise JobFileError("the job file has no `tables:` block: add `tables: {}` for the defaults (see docs/tables.md)")
    props = {k: _text(v) for k, v in settings.catalog.items()}
    name = props.pop("name", DEFAULT_NAME)
    remote = destination.startswith("s3://")
    lake = destination.rstrip("/") if remote else Path(destination.removeprefix("file://")).expanduser().absolute().as_posix()
    if not props.get("type") and not props.get("uri") and "py-catalog-impl" not in props:
        if remote:
            raise JobFileError(
                f"tables.catalog: an S3 lake ({destination}) needs a shared catalog; set one of "
                "{type: glue}, {type: sql, uri: 'postgresql+psycopg2://USER@HOST/DB'} or {type: rest, uri: 'https://...'} "
                "(a SQLite file cannot be shared safely on S3)"
            )
        props = {"type": "sql", "uri": f"sqlite:///{lake}/{TABLES_PREFIX}catalog.db", **props}
    warehouse = settings.warehouse or props.get("warehouse") or (f"{lake}/{TABLES_PREFIX}warehouse" if remote else f"file://{lake}/{TABLES_PREFIX}warehouse")
    props["warehouse"] = warehouse
    if remote or warehouse.startswith("s3://"):  # the lake's own S3 settings, unless the catalog says otherwise
        defaults = {"s3.endpoint": job.s3.endpoint_url, "s3.region": job.s3.region, "client.region": job.s3.region}
        props = {**{k: v for k, v in defaults.items() if v}, **props}
    return name, props


def open_catalog(job: Job, destination: str) -> Catalog:
    """The job's catalog (`catalog_properties`), its local folder made where it is the default."""
    name, props = catalog_properties(job, destination)
    uri = props.get("uri", "")
    if uri.startswith("sqlite:///"):
        Path(uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    if props["warehouse"].startswith("file://"):
        Path(props["warehouse"].removeprefix("file://")).mkdir(parents=True, exist_ok=True)
    from pyiceberg.catalog import load_catalog
    from pyiceberg.exceptions import NotInstalledError

    redact = Redactor(job.secrets())  # a driver's error may quote the URI it was given, password and all
    try:
        if not uri.startswith("sqlite:///"):
            return load_catalog(name, **props)
        # A SQL catalog makes its tables as it opens: two processes opening a new SQLite file at
        # once would both try, and one fail. Opening is brief; the lock is held for that only.
        with FileLock(uri.removeprefix("sqlite:///") + ".lock"):
            return load_catalog(name, **props)
    except (ImportError, NotInstalledError) as exc:
        raise TableError(
            redact(
                f"tables.catalog: the driver of catalog {name!r} ({props.get('type', 'sql')}) is not installed: {exc} "
                "(pip install 'apilake[catalogs]' brings PostgreSQL's and Glue's)"
            )
        ) from None
    except (ValueError, NotImplementedError) as exc:
        raise TableError(redact(f"tables.catalog: pyiceberg cannot open catalog {name!r} ({props.get('type', 'sql')}): {exc}")) from None
    except Exception as exc:  # noqa: BLE001 - a catalog service that does not answer: its driver's own error type
        raise TableError(redact(f"tables.catalog: cannot reach catalog {name!r} ({props.get('type', 'sql')}): {type(exc).__name__}: {exc}")) from None


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)
