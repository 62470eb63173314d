"""Editing a route, an upstream or a key never silently drops a setting: every setting is
set with ``config apply`` (or ``keys create``), one thing is edited through the console
(a real gateway, CSRF and all) or the CLI, and ``config export`` (``keys list``) still
has every other setting, byte for byte."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path
from typing import Any

import pytest

from litegate.demo import DEMO_MODEL, setup_demo_model
from litegate.settings import Settings
from tests.e2e.support import browser_fields, create_console_user, csrf_of, http_login
from tests.helpers.cli import apply_config, run_cli

PASSWORD = "alice-password"


def full_config(base_url: str) -> dict[str, Any]:
    """Every upstream and route setting the config schema has, none at its default."""
    return {
        "upstreams": [
            {"name": "mock", "kind": "openai", "base_url": base_url, "api_key_env": "MOCK_KEY",
             "timeout_s": 7.5, "connect_timeout_s": 2.5, "max_retries": 3},
        ],
        "routes": [
            {"name": "backup", "variants": [{"upstream": "mock", "model": "small-model"}]},
            {
                "name": "chat",
                "description": "the chat route",
                "variants": [
                    {"upstream": "mock", "model": "m-a", "name": "a", "weight": 70,
                     "price": {"input_per_1m": 0.15, "output_per_1m": 0.6}},
                    {"upstream": "mock", "model": "m-b", "name": "b", "weight": 30,
                     "price": {"input_per_1m": 2.5, "output_per_1m": 10.0}},
                    {"upstream": "mock", "model": "m-c", "name": "c", "weight": 0,
                     "price": {"input_per_1m": 0.0, "output_per_1m": 1.25}},
                ],
                "sticky": "header:X-User",
                "cache": {"ttl_s": 60},
                "limits": ["100/minute"],
                "token_limits": ["100000/day"],
                "fallback": "backup",
                "shadow": "c",
                "adaptive": {"metric": "latency", "min_share": 0.1, "cooldown_s": 15,
                             "min_samples": 50},
                "semantic_cache": {"embedding_model": DEMO_MODEL, "threshold": 0.85,
                                   "max_entries": 500, "ttl_s": 600,
                                   "shared_across_keys": True},
            },
        ],
    }


@pytest.fixture
def configured(home: Path, fake_upstream: Any) -> str:
    """The full configuration applied; returns its ``config export``."""
    asyncio.run(setup_demo_model(Settings.load(home=home)))  # the semantic cache's model
    code, _, err = apply_config(home, full_config(fake_upstream.base_url))
    assert code == 0, err
    return export(home)


def export(home: Path) -> str:
    code, out, err = run_cli("config", "export", home=home)
    assert code == 0, err
    return out


def changed(text: str, old: str, new: str) -> str:
    """``text`` with its one occurrence of ``old`` replaced."""
    assert text.count(old) == 1, (old, text)
    return text.replace(old, new)


def console(home: Path, make_gateway: Any) -> Any:
    create_console_user(home, "alice", PASSWORD)
    return http_login(make_gateway().url, "alice", PASSWORD)


def page_id(client: Any, listing: str, name: str) -> str:
    m = re.search(rf'href="/admin/{listing}/(\d+)">{re.escape(name)}<',
                  client.get(f"/admin/{listing}").text)
    assert m is not None
    return m.group(1)


def row_of(fields: dict[str, str], variant: str) -> int:
    """The form row index of the variant named ``variant``."""
    return next(int(k.split("-")[1]) for k, v in fields.items()
                if re.fullmatch(r"variants-\d+-name", k) and v == variant)


# -- console: routes ----------------------------------------------------------------


def test_console_route_edit_keeps_every_other_setting(home, configured, make_gateway):
    client = console(home, make_gateway)
    rid = page_id(client, "routes", "chat")
    page = client.get(f"/admin/routes/{rid}").text
    fields = browser_fields(page, 'id="route-form"')
    b = row_of(fields, "b")
    # The form shows each variant's prices.
    assert (fields[f"variants-{b}-input_per_1m"], fields[f"variants-{b}-output_per_1m"]) == (
        "2.5", "10")
    # The whole form as the browser sends it, one weight changed.
    r = client.post(f"/admin/routes/{rid}", data=fields | {f"variants-{b}-weight": "40"})
    assert r.status_code == 303, r.text
    assert export(home) == changed(configured, "weight: 30", "weight: 40")


def test_console_route_form_without_some_fields_keeps_those_settings(
    home, configured, make_gateway
):
    """A form that lacks fields (an overridden template, an older page, a script posting
    only what it changes) leaves the settings behind them as stored."""
    client = console(home, make_gateway)
    rid = page_id(client, "routes", "chat")
    page = client.get(f"/admin/routes/{rid}").text
    version = re.search(r'name="row_version" value="(\d+)"', page)
    assert version is not None
    base = {"_csrf": csrf_of(page), "row_version": version.group(1)}
    r = client.post(f"/admin/routes/{rid}", data=base | {"description": "edited"})
    assert r.status_code == 303, r.text
    after_description = changed(configured, "description: the chat route",
                                "description: edited")
    assert export(home) == after_description

    # Variant rows without price fields: the weights change, the prices stay.
    page = client.get(f"/admin/routes/{rid}").text
    version = re.search(r'name="row_version" value="(\d+)"', page)
    assert version is not None
    rows = {"variant_rows": "3"}
    for i, (name, model, weight) in enumerate((("a", "m-a", "60"), ("b", "m-b", "40"),
                                               ("c", "m-c", "0"))):
        rows |= {f"variants-{i}-name": name, f"variants-{i}-upstream": "mock",
                 f"variants-{i}-model": model, f"variants-{i}-weight": weight}
    r = client.post(f"/admin/routes/{rid}", data={"_csrf": csrf_of(page),
                                                  "row_version": version.group(1)} | rows)
    assert r.status_code == 303, r.text
    expected = changed(changed(after_description, "weight: 70", "weight: 60"),
                       "weight: 30", "weight: 40")
    assert export(home) == expected


def test_console_route_form_edits_prices_with_field_errors(home, configured, make_gateway):
    client = console(home, make_gateway)
    rid = page_id(client, "routes", "chat")
    fields = browser_fields(client.get(f"/admin/routes/{rid}").text, 'id="route-form"')
    a = row_of(fields, "a")
    for bad, message in (("-1", "must be between 0 and 1e+06"), ("cheap", "must be a number"),
                         ("nan", "must be a finite number")):
        r = client.post(f"/admin/routes/{rid}", data=fields | {f"variants-{a}-input_per_1m": bad})
        assert r.status_code == 400, r.text
        assert f'data-field="variants-{a}-input_per_1m">{message}<' in r.text, r.text
        assert f'name="variants-{a}-input_per_1m" value="{bad}"' in r.text  # kept to fix
    assert export(home) == configured

    r = client.post(f"/admin/routes/{rid}", data=fields | {f"variants-{a}-input_per_1m": "0.2"})
    assert r.status_code == 303, r.text
    assert export(home) == changed(configured, "input_per_1m: 0.15", "input_per_1m: 0.2")
    # Both sides blank: the variant has no price any more (and only that changes).
    fields = browser_fields(client.get(f"/admin/routes/{rid}").text, 'id="route-form"')
    r = client.post(f"/admin/routes/{rid}", data=fields | {f"variants-{a}-input_per_1m": "",
                                                           f"variants-{a}-output_per_1m": ""})
    assert r.status_code == 303, r.text
    assert export(home) == changed(
        configured, "    price:\n      input_per_1m: 0.15\n      output_per_1m: 0.6\n", "")


# -- console: upstreams and keys --------------------------------------------------------


def test_console_upstream_edit_keeps_every_other_setting(home, configured, make_gateway):
    client = console(home, make_gateway)
    uid = page_id(client, "upstreams", "mock")
    form = f'action="/admin/upstreams/{uid}"'
    page = client.get(f"/admin/upstreams/{uid}").text
    version = re.search(r'name="row_version" value="(\d+)"', page)
    assert version is not None
    # Only the retries: the fields the form lacks (API key variable, timeouts) are kept.
    r = client.post(f"/admin/upstreams/{uid}", data={
        "_csrf": csrf_of(page), "row_version": version.group(1), "max_retries": "2"})
    assert r.status_code == 303, r.text
    expected = changed(configured, "max_retries: 3", "max_retries: 2")
    assert export(home) == expected
    # The whole form as shown, saved as it is: nothing changes.
    page = client.get(f"/admin/upstreams/{uid}").text
    r = client.post(f"/admin/upstreams/{uid}", data=browser_fields(page, form))
    assert r.status_code == 303, r.text
    assert export(home) == expected


def keys_json(home: Path) -> list[dict[str, Any]]:
    code, out, err = run_cli("keys", "list", "--json", home=home)
    assert code == 0, err
    rows: list[dict[str, Any]] = json.loads(out)
    return rows


def make_full_key(home: Path) -> dict[str, Any]:
    code, _, err = run_cli(
        "keys", "create", "--name", "full", "--routes", "chat,backup", "--limit", "10/minute",
        "--token-limit", "5000/day", "--expires", "2030-01-02T03:04:05.678901",
        "--budget", "12.5", "--budget-period", "7d", "--budget-alert", "0.8", "--json",
        home=home)
    assert code == 0, err
    (key,) = [k for k in keys_json(home) if k["name"] == "full"]
    assert key["expires_at"].startswith("2030-01-02T03:04:05.678901"), key
    return key


def test_console_key_edit_keeps_expiry_seconds_and_budget(home, configured, make_gateway):
    key = make_full_key(home)
    client = console(home, make_gateway)
    page = client.get(f"/admin/keys/{key['id']}").text
    fields = browser_fields(page, 'id="key-edit-form"')
    assert fields["expires_at"] == "2030-01-02T03:04"  # the form shows minutes
    # As a browser posts it: every field shown, the ticked routes repeated, one limit changed.
    data: dict[str, Any] = fields | {"routes": ["chat", "backup"], "limits": "20/minute"}
    r = client.post(f"/admin/keys/{key['id']}", data=data)
    assert r.status_code == 303, r.text
    (after,) = [k for k in keys_json(home) if k["name"] == "full"]
    assert after == key  # limits live in quotas, not in the key's row: the row is unchanged
    code, out, _ = run_cli("keys", "update", str(key["id"]), home=home)
    assert code == 0 and "limits 20/minute" in out and "token limits 5000/day" in out, out


# -- CLI ------------------------------------------------------------------------------


def test_cli_routes_set_changes_only_what_it_is_given(home, configured):
    code, out, err = run_cli("routes", "set", "chat", "--description", "via the CLI", home=home)
    assert code == 0, err
    assert out == 'route chat updated:\n  description: "the chat route" -> "via the CLI"\n'
    step = changed(configured, "description: the chat route", "description: via the CLI")
    assert export(home) == step

    # New variant weights: each variant given without a price keeps its stored one.
    variants = ("--variant", "upstream=mock,model=m-a,name=a,weight=50",
                "--variant", "upstream=mock,model=m-b,name=b,weight=50",
                "--variant", "upstream=mock,model=m-c,name=c,weight=0")
    code, out, err = run_cli("routes", "set", "chat", *variants, home=home)
    assert code == 0, err
    assert out.startswith("route chat updated:\n  variants: ") and out.count("\n") == 2, out
    step = changed(changed(step, "weight: 70", "weight: 50"), "weight: 30", "weight: 50")
    assert export(home) == step

    # A price given on the command line replaces that variant's price only.
    code, _, err = run_cli("routes", "set", "chat", *variants[:4], "--variant",
                           "upstream=mock,model=m-c,name=c,weight=0,input_per_1m=0.5,"
                           "output_per_1m=2", home=home)
    assert code == 0, err
    step = changed(changed(step, "input_per_1m: 0.0", "input_per_1m: 0.5"),
                   "output_per_1m: 1.25", "output_per_1m: 2.0")
    assert export(home) == step

    # Nothing given but the name: nothing changes, and it says so.
    code, out, err = run_cli("routes", "set", "chat", home=home)
    assert (code, out) == (0, "route chat unchanged\n"), err
    assert export(home) == step

    # "none" clears one setting, '' the description; the rest stays.
    code, out, err = run_cli("routes", "set", "chat", "--semantic-cache", "none",
                             "--description", "", home=home)
    assert code == 0, err
    assert "semantic_cache: {" in out and "-> (not set)" in out and "description:" in out
    without = re.sub(r"  semantic_cache:\n(    .*\n)+", "", step)
    assert export(home) == changed(without, "  description: via the CLI\n", "")


def test_cli_routes_set_refusals_are_clear(home, configured):
    # Dropping the shadow variant without dropping the shadow: refused, nothing saved.
    code, _, err = run_cli("routes", "set", "chat", "--variant",
                           "upstream=mock,model=m-a,name=a", home=home)
    assert code == 1 and "route.shadow: 'c' is not a variant of this route" in err, err
    code, _, err = run_cli("routes", "set", "chat", "--variant",
                           "upstream=mock,model=m-a,name=a,input_per_1m=-1", home=home)
    assert code == 1 and "price.input_per_1m: must be between 0 and" in err, err
    assert export(home) == configured
    code, _, err = run_cli("routes", "set", "nope", "--description", "x", home=home)
    assert code == 1 and "route 'nope' does not exist: give at least one --variant" in err
    with pytest.raises(SystemExit) as exit_info:  # argparse's usage error
        run_cli("routes", "set", "chat", "--variant",
                "upstream=mock,model=m-a,input_per_1m=cheap", home=home)
    assert exit_info.value.code == 2


def test_cli_upstreams_set_and_keys_update_keep_the_rest(home, configured):
    code, out, err = run_cli("upstreams", "set", "mock", "--timeout", "9", home=home)
    assert code == 0, err
    assert out == "upstream mock updated:\n  timeout_s: 7.5 -> 9.0\n"
    assert export(home) == changed(configured, "timeout_s: 7.5", "timeout_s: 9.0")

    key = make_full_key(home)
    code, out, err = run_cli("keys", "update", str(key["id"]), "--limit", "20/minute",
                             home=home)
    assert code == 0, err
    assert "limits 20/minute; token limits 5000/day" in out, out
    (after,) = [k for k in keys_json(home) if k["name"] == "full"]
    assert after == key
