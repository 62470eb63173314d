"""``config apply``: the whole configuration (default) or a patch (``--merge``); an error
says which mode it judged the file in (issue 8 item 10)."""

from __future__ import annotations

import pytest
import yaml

from litegate.cli import main
from tests.helpers.cli import apply_config, chat_config, run_cli

ROUTES_ONLY = {"routes": [{"name": "chat2", "variants": [{"upstream": "mock", "model": "m"}],
                           "fallback": "chat"}]}


def test_routes_only_file_is_a_patch_with_merge_and_an_error_naming_the_mode_without(home, tmp_path):
    assert apply_config(home, chat_config("http://127.0.0.1:9/v1"))[0] == 0
    code, _, err = apply_config(home, ROUTES_ONLY, tmp_path)
    assert code == 1
    assert "routes[0].variants[0].upstream: unknown upstream 'mock'" in err
    assert "mode: whole configuration (the default)" in err and "use --merge" in err
    # Before: --merge did not exist (argparse exit 2); the file could not be applied at all.
    code, out, err = apply_config(home, ROUTES_ONLY, tmp_path, "--merge")
    assert code == 0, err
    exported = yaml.safe_load(run_cli("config", "export", home=home)[1])
    assert [r["name"] for r in exported["routes"]] == ["chat", "chat2"]  # nothing deleted
    assert exported["routes"][1]["fallback"] == "chat"


def test_merge_still_rejects_what_the_database_lacks_and_says_so(home, tmp_path):
    code, _, err = apply_config(home, ROUTES_ONLY, tmp_path, "--merge")
    assert code == 1
    assert "unknown upstream 'mock'" in err and "mode: --merge (a patch)" in err
    assert run_cli("routes", "list", "--json", home=home)[1].strip() == "[]"


def test_merge_and_prune_exclude_each_other(home, tmp_path, capsys):
    with pytest.raises(SystemExit) as usage_error:
        main(["--home", str(home), "config", "apply", str(tmp_path / "x.yaml"), "--prune", "--merge"])
    assert usage_error.value.code == 2
    assert "argument --merge: not allowed with argument --prune" in capsys.readouterr().err
