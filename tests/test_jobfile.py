import json
import re
from pathlib import Path

import pytest
import yaml

from apilake.errors import JobFileError
from apilake.jobfile import alias_nodes, load_job, secret_use

GOOD = """
timezone: Asia/Seoul
sources:
  - name: dataai
    base_url: https://api.data.ai
    token: ${TOKEN}
    endpoints:
      - name: hist
        kind: json
        path: /v1.3/x/{market}
        matrix: {market: [ios]}
profiles:
  dev:
    destination: ./dev-lake
    sources:
      dataai: {base_url: "http://127.0.0.1:9999", requests_per_minute: 5}
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "job.yaml"
    path.write_text(text)
    return path


def test_loads_and_substitutes(tmp_path: Path) -> None:
    job = load_job(write(tmp_path, GOOD), environ={"TOKEN": "s3cr3t"})
    assert job.sources[0].token == "s3cr3t"
    assert job.secrets() == ["s3cr3t"]
    assert job.destination == "./lake"


def test_profile_overrides_top_level_and_source_settings(tmp_path: Path) -> None:
    job = load_job(write(tmp_path, GOOD), profile="dev", environ={"TOKEN": "x"})
    assert job.destination == "./dev-lake"
    assert job.sources[0].base_url == "http://127.0.0.1:9999"
    assert job.sources[0].requests_per_minute == 5
    assert job.sources[0].endpoints[0].name == "hist"


def test_profile_from_environment(tmp_path: Path) -> None:
    job = load_job(write(tmp_path, GOOD), environ={"TOKEN": "x", "APILAKE_PROFILE": "dev"})
    assert job.destination == "./dev-lake"


@pytest.mark.parametrize(
    "text, environ, message",
    [
        (GOOD, {}, r"sources\[0\].token: environment variable TOKEN is not set"),
        (GOOD.replace("kind: json", "kind: jsn"), {"TOKEN": "x"}, r"sources\[0\].endpoints\[0\].kind: got 'jsn'"),
        (GOOD.replace("kind: json", "kind: json\n        pagnate: next_page"), {"TOKEN": "x"}, r"sources\[0\].endpoints\[0\].pagnate: unknown key"),
        (GOOD.replace("timezone: Asia/Seoul", "timezone: Mars/Base"), {"TOKEN": "x"}, "unknown time zone 'Mars/Base'"),
        (GOOD.replace("{market}", "{markt}"), {"TOKEN": "x"}, r"sources\[0\].endpoints\[0\].path: unknown placeholder \{markt\}"),
        ("sources: [\n  - name: x\n", {}, "line 2, column 3: not valid YAML"),
        ("- just a list", {}, "a job file is a YAML mapping"),
        (GOOD.replace("[ios]", "ios"), {"TOKEN": "x"}, r"matrix.market: Input should be a valid list"),
        (GOOD.replace("kind: json", "kind: json\n        files: metrics"), {"TOKEN": "x"}, r"endpoints\[0\]: files: applies to kind: bulk only"),
        (GOOD.replace("kind: json", "kind: bulk\n        paginate: next_page"), {"TOKEN": "x"}, r"paginate: applies to kind: json only"),
        (GOOD.replace("{market: [ios]}", "{file_name: [a]}").replace("{market}", "{file_name}"), {"TOKEN": "x"}, "clashes with a built-in placeholder"),
        (GOOD.replace("Asia/Seoul", "America"), {"TOKEN": "x"}, "unknown time zone 'America'"),
        (GOOD.replace("kind: json", "kind: bulk\n        key: '{file_name:%Y}'"), {"TOKEN": "x"}, r"key: \{file_name\} is not a date"),
        (
            GOOD.replace('dataai: {base_url: "http://127.0.0.1:9999", requests_per_minute: 5}', "dataai:"),
            {"TOKEN": "x", "APILAKE_PROFILE": "dev"},
            "profiles.dev.sources.dataai: expected a mapping",
        ),
    ],
)
def test_errors_name_file_and_key_path(tmp_path: Path, text: str, environ: dict, message: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(JobFileError, match=message) as info:
        load_job(path, environ=environ)
    assert str(path) in str(info.value)


def test_unknown_profile(tmp_path: Path) -> None:
    with pytest.raises(JobFileError, match="no profile named 'prod'"):
        load_job(write(tmp_path, GOOD), profile="prod", environ={"TOKEN": "x"})


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(JobFileError, match="no such job file"):
        load_job(tmp_path / "nope.yaml")


def test_secret_looking_variables_are_secrets_wherever_they_are_used(tmp_path: Path) -> None:
    text = GOOD.replace("matrix: {market: [ios]}", "matrix: {market: [ios]}\n        params: {api_key: '${VENDOR_API_KEY}', region: '${REGION}'}")
    job = load_job(write(tmp_path, text), environ={"TOKEN": "t0k3n", "VENDOR_API_KEY": "k3y-value", "REGION": "eu"})
    assert set(job.secrets()) == {"t0k3n", "k3y-value"}


@pytest.mark.parametrize(
    "where, name, secret",
    [
        ("sources[0].token", "T", True),  # a credential setting: whatever the variable's name
        ("sources[0].auth.password", "P", True),
        ("sources[0].auth.client_secret", "CS", True),
        ("sources[0].auth.refresh_token", "GRANT", True),
        ("sources[0].auth.value", "V", True),
        ("sources[0].headers.X-Api-Key", "K", True),
        ("notify.urls[0]", "HOOK", True),
        ("sources[0].base_url", "BOT_TOKEN", True),  # a part of a request, named as a credential
        ("sources[0].endpoints[1].path", "API_KEY", True),
        ("sources[0].endpoints[0].params.q", "SESSION_ID", True),
        ("sources[0].endpoints[0].body.filter.x", "AUTH", True),
        ("sources[0].endpoints[0].matrix.acct[0]", "ACCT_TOKEN", True),
        ("sources[0].headers.Accept", "ACCEPT", False),
        ("sources[0].endpoints[0].path", "REGION", False),
        ("sources[0].auth.token_url", "AUTH_TOKEN_URL", False),  # a URL, named as a credential: no secret
        ("sources[0].auth.client_id", "CLIENT_KEY", False),
        ("destination", "LAKE_KEY", False),
        ("sources[0].endpoints[0].key", "KEY_PREFIX", False),
        ("tables.catalog.uri", "PGPASSWORD", True),  # postgresql://user:${PGPASSWORD}@host/db
        ("tables.catalog.client.secret-access-key", "AWS_SECRET", True),
        ("tables.catalog.uri", "CATALOG_HOST", False),
        ("tables.warehouse", "LAKE_TOKEN_BUCKET", False),
    ],
)
def test_a_variable_is_a_secret_by_the_setting_it_fills(where: str, name: str, secret: bool) -> None:
    assert secret_use(where, name) is secret


def test_an_unset_secret_variable_in_a_matrix_value_is_refused_offline_too(tmp_path: Path) -> None:
    """Offline commands keep an unset variable only where a credential goes; in a matrix value it
    is refused, naming the value's key, before it could reach a key or a record."""
    text = GOOD.replace("matrix: {market: [ios]}", "matrix: {market: [ios, '${TOKEN}']}")
    with pytest.raises(JobFileError, match=r"sources\[0\]\.endpoints\[0\]\.matrix\.market\[1\]: environment variable TOKEN is not set"):
        load_job(write(tmp_path, text), environ={}, offline=True)


def test_a_value_that_is_no_secret_may_be_in_a_key(tmp_path: Path) -> None:
    text = GOOD.replace("matrix: {market: [ios]}", "matrix: {market: ['${REGION}']}\n        key: 'x/${REGION}/{date}.json'")
    job = load_job(write(tmp_path, text), environ={"TOKEN": "t0k3n-value", "REGION": "eu-west"})
    assert job.sources[0].endpoints[0].key == "x/eu-west/{date}.json"


def test_offline_loading_leaves_unset_variables_as_written(tmp_path: Path) -> None:
    job = load_job(write(tmp_path, GOOD), environ={}, offline=True)
    assert job.sources[0].token == "${TOKEN}"


def test_only_credential_headers_are_secrets(tmp_path: Path) -> None:
    text = GOOD.replace("token: ${TOKEN}", "token: ${TOKEN}\n    headers: {Accept: application/json, X-Api-Key: k-123456}")
    assert set(load_job(write(tmp_path, text), environ={"TOKEN": "t0k3n"}).secrets()) == {"t0k3n", "k-123456"}


ACME = """
sources:
  - name: acme
    base_url: https://api.acme.test
    auth: {type: oauth2_client_credentials, token_url: "https://auth.acme.test/oauth/token", client_id: id, client_secret: s3cret}
    endpoints:
      - name: accounts
        kind: json
        path: /accounts
        paginate: {type: cursor, cursor_path: meta.next, cursor_param: cursor}
      - name: products
        kind: json
        path: /accounts/{account_id}/products
        for_each: {endpoint: accounts, values: "accounts[].id", as: account_id}
      - name: installs
        kind: report
        create: {method: POST, path: /reports, body: {from: "{date}"}}
        id_path: report_id
        poll: {path: "/reports/{report_id}", status_path: status, done: [done]}
        urls: result.urls
"""


def test_a_job_with_the_new_kinds_loads(tmp_path: Path) -> None:
    job = load_job(write(tmp_path, ACME), environ={})
    endpoints = job.sources[0].endpoints
    assert endpoints[0].paginate_type == "cursor" and endpoints[0].max_pages == 1000
    assert endpoints[1].for_each is not None and endpoints[1].for_each.as_ == "account_id"
    assert "s3cret" in job.secrets()


@pytest.mark.parametrize(
    "old, new, message",
    [
        ("cursor_param: cursor}", 'cursor_param: cursor, cursor_path: "a["}', "is not a JMESPath expression"),
        (
            "cursor_param: cursor}",
            "cursor_param: cursor, max_pages: 0}",
            r"endpoints\[0\].paginate.cursor.max_pages: Input should be greater than or equal to 1",
        ),
        ("type: cursor,", "type: sideways,", r"endpoints\[0\].paginate: Input tag 'sideways' .* expected tags: 'json_link', 'header_link'"),
        ("endpoint: accounts,", "endpoint: nowhere,", "for_each.endpoint: no endpoint 'nowhere'"),
        ("endpoint: accounts,", "endpoint: products,", "for_each forms a cycle: products -> products"),
        ("as: account_id", "as: date", "clashes with a matrix variable or a built-in placeholder"),
        ("        id_path: report_id\n", "", "id_path: required for kind: report"),
        ("urls: result.urls", "urls: result.urls\n        path: /x", "a report has no path of its own"),
        ("path: /reports,", 'path: "/reports/{report_id}",', r"create.path: unknown placeholder \{report_id\}"),
        ('{from: "{date}"}', '{from: "{dat}"}', r"create.body.from: unknown placeholder \{dat\}"),
        ("kind: json\n        path: /accounts\n", "kind: json\n        path: /accounts\n        body: {a: 1}\n", "only a POST sends a body"),
        ("client_secret: s3cret}", "client_secret: s3cret}\n    token: t", "token: and auth: both given"),
        ("type: oauth2_client_credentials,", "type: kerberos,", r"auth: .*kerberos"),
    ],
)
def test_new_key_errors_name_the_key(tmp_path: Path, old: str, new: str, message: str) -> None:
    assert old in ACME
    with pytest.raises(JobFileError, match=message):
        load_job(write(tmp_path, ACME.replace(old, new, 1)), environ={})


def test_notify_takes_apprise_urls_and_a_bare_yaml_on_key(tmp_path: Path) -> None:
    text = GOOD + "notify:\n  urls: ['slack://T1/B2/${SLACK_TOKEN}']\n  on: [failure]\n"
    job = load_job(write(tmp_path, text), environ={"TOKEN": "x", "SLACK_TOKEN": "xoxb-123"})
    assert job.notify is not None and job.notify.on == ["failure"] and job.notify.urls == ["slack://T1/B2/xoxb-123"]
    assert "slack://T1/B2/xoxb-123" in job.secrets()  # a notification URL carries its service's credentials
    default = load_job(write(tmp_path, GOOD + "notify: {urls: ['json://localhost/hook']}\n"), environ={"TOKEN": "x"})
    assert default.notify is not None and default.notify.on == ["failure", "recovery"]
    with pytest.raises(JobFileError, match=r"notify\.on\[0\]: got 'sucess'"):
        load_job(write(tmp_path, GOOD + "notify: {urls: ['json://localhost/hook'], on: [sucess]}\n"), environ={"TOKEN": "x"})


def test_notify_in_a_profile(tmp_path: Path) -> None:
    text = GOOD.replace("    destination: ./dev-lake\n", "    destination: ./dev-lake\n    notify: {urls: ['json://127.0.0.1:9/hook'], on: [failure]}\n")
    assert load_job(write(tmp_path, text), environ={"TOKEN": "x"}).notify is None
    job = load_job(write(tmp_path, text), profile="dev", environ={"TOKEN": "x"})
    assert job.notify is not None and job.notify.urls == ["json://127.0.0.1:9/hook"] and job.notify.on == ["failure"]


def bomb(levels: int, width: int = 9) -> str:
    lines = [f"l0: &l0 [{', '.join(['lol'] * width)}]"]
    lines += [f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * width)}]" for i in range(1, levels + 1)]
    return "\n".join(lines)


@pytest.mark.parametrize(
    "text, added",
    [
        ("a: 1", 0),
        ("a: &x [1, 2]\nb: *x", 3),
        ("d: &d {x: 1, y: 2}\ne: {<<: *d, z: 3}", 5),
        ("a: &x 1\nb: [*x, *x, *x]", 3),
        (bomb(2, 3), 3 * 4 + 3 * 13),  # l1: 3 aliases of 4 nodes (l0 and its items), l2: 3 of 13
    ],
)
def test_alias_nodes_counts_what_aliases_add(text: str, added: int) -> None:
    assert alias_nodes(yaml.compose(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))) == added


def test_alias_nodes_walks_deep_graphs_without_recursion() -> None:
    node = yaml.ScalarNode("tag:yaml.org,2002:str", "leaf")
    for _ in range(5_000):
        node = yaml.SequenceNode("tag:yaml.org,2002:seq", [node, node])  # each level doubles the tree
    assert alias_nodes(node) == 2**5_001 - 1 - 5_001


def test_alias_nodes_refuses_a_recursive_anchor() -> None:
    with pytest.raises(ValueError, match="recursive anchor"):
        alias_nodes(yaml.compose("a: &a [1, *a]", Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader)))


def test_an_alias_bomb_is_refused_and_merge_keys_still_work(tmp_path: Path) -> None:
    with pytest.raises(JobFileError, match=r"YAML aliases \(\*name\) would add [\d,]+ nodes to this file, past the limit of 100,000"):
        load_job(write(tmp_path, GOOD + bomb(9)), environ={"TOKEN": "x"})
    text = GOOD.replace(
        "        matrix: {market: [ios]}\n",
        "        matrix: &markets {market: [ios, gp]}\n      - {name: other, kind: json, path: '/y/{market}', matrix: *markets}\n",
    )
    job = load_job(write(tmp_path, text), environ={"TOKEN": "x"})
    assert [e.matrix for e in job.sources[0].endpoints] == [{"market": ["ios", "gp"]}] * 2


@pytest.mark.parametrize(
    "headers, message",
    [
        ({"X-Trace": "a\r\nX-Injected: 1"}, "sources[0].headers: header X-Trace: its value holds a control character"),
        ({"X-Trace": "a\x00b"}, "header X-Trace: its value holds a control character"),
        ({"X Trace": "a"}, "header name 'X Trace' is not an HTTP token"),
        ({"X-Trace": "tab\tis fine, ünïcode too"}, None),
    ],
)
def test_header_values_with_control_characters_are_refused(tmp_path: Path, headers: dict, message: str | None) -> None:
    text = GOOD.replace("token: ${TOKEN}", "token: ${TOKEN}\n    headers: {X: '${HEADER}'}").replace("X:", f"{json.dumps(next(iter(headers)))}:")
    path = write(tmp_path, text)
    environ = {"TOKEN": "x", "HEADER": next(iter(headers.values()))}
    if message is None:
        assert load_job(path, environ=environ).sources[0].headers == headers
    else:
        with pytest.raises(JobFileError, match=re.escape(message)):
            load_job(path, environ=environ)


@pytest.mark.parametrize(
    "auth",
    ["token: '${TOKEN}'", "auth: {type: bearer, token: '${TOKEN}'}", "auth: {type: api_key, name: X-Key, value: '${TOKEN}'}"],
)
def test_credentials_sent_as_headers_may_not_hold_control_characters(tmp_path: Path, auth: str) -> None:
    with pytest.raises(JobFileError, match="its value holds a control character"):
        load_job(write(tmp_path, GOOD.replace("token: ${TOKEN}", auth)), environ={"TOKEN": "t\r\nX-Evil: 1"})


def test_offline_loading_names_an_unset_variable_outside_credentials(tmp_path: Path) -> None:
    text = GOOD.replace("path: /v1.3/x/{market}", "path: /v1.3/${ACCOUNT}/{market}")
    with pytest.raises(JobFileError, match=r"endpoints\[0\].path: environment variable ACCOUNT is not set .*without credentials only"):
        load_job(write(tmp_path, text), environ={}, offline=True)
    assert load_job(write(tmp_path, text), environ={"ACCOUNT": "a1"}, offline=True).sources[0].token == "${TOKEN}"


def test_an_s3_upload_guard_shorter_than_a_transfer_is_refused(tmp_path: Path) -> None:
    """The start-of-run sweep may not abort what a live transfer is still sending."""
    guard = "s3: {stale_upload_minutes: 30}\n"
    with pytest.raises(JobFileError, match=r"s3.stale_upload_minutes \(30\) must be longer than sources\[0\].timeouts.total \(3600 s\)"):
        load_job(write(tmp_path, "destination: s3://lake/raw\n" + guard + GOOD), environ={"TOKEN": "t"})
    load_job(write(tmp_path, "destination: ./lake\n" + guard + GOOD), environ={"TOKEN": "t"})  # no uploads to sweep
