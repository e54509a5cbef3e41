"""The contract lints clean under spectral:oas, the OWASP API ruleset and our own rules.

Spectral and both rulesets are pinned in ``package.json``/``package-lock.json`` (``npm ci``).
Each of our rules is shown to fire on a spec broken in the way it guards against.
"""

from __future__ import annotations

import copy
import json
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from support_requests.openapi import SPEC_PATH
from tests.helpers import require_tool

pytestmark = pytest.mark.slow  # each case runs Spectral under node: about 2 s

ROOT = Path(__file__).resolve().parents[1]
SPECTRAL = ROOT / "node_modules" / ".bin" / "spectral"
RULESET = ROOT / "spectral.yaml"
SPEC_NAME = SPEC_PATH.relative_to(ROOT)


@pytest.fixture(scope="module", autouse=True)
def _spectral_installed() -> None:
    require_tool(SPECTRAL.exists(), "spectral", "run `npm ci`")


def lint(root: Path) -> list[dict[str, Any]]:
    """Spectral's findings for ``root``'s spec under ``root``'s ruleset, every severity."""
    result = subprocess.run(
        [
            str(SPECTRAL),
            "lint",
            "--ruleset",
            str(root / "spectral.yaml"),
            "--format",
            "json",
            "--quiet",
            "--fail-severity",
            "hint",
            str(root / SPEC_NAME),
        ],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode in (0, 1), result.stderr
    findings: list[dict[str, Any]] = json.loads(result.stdout or "[]")
    assert (result.returncode == 1) == bool(findings), result.stderr
    return findings


def codes(findings: list[dict[str, Any]]) -> set[str]:
    return {str(finding["code"]) for finding in findings}


def test_the_contract_lints_with_no_error_warning_info_or_hint() -> None:
    findings = lint(ROOT)
    assert findings == [], "\n".join(
        f"{f['code']}: {f['message']} at {'.'.join(map(str, f['path']))}" for f in findings
    )


def test_every_turned_off_rule_says_why() -> None:
    lines = RULESET.read_text().splitlines()
    for number, line in enumerate(lines):
        if line.strip().endswith('"off"') and line.startswith("  owasp"):
            assert lines[number - 1].strip().startswith("#"), f"no reason above: {line}"
    ruleset = yaml.safe_load(RULESET.read_text())
    for override in ruleset["overrides"]:
        assert override["rules"], override


# -- our own rules fire on a spec broken the way they guard against ------------------------


@pytest.fixture
def broken(tmp_path: Path) -> Callable[[Callable[[dict[str, Any]], None]], set[str]]:
    """Lint a copy of the spec after ``mutate``; the copy sits where the ruleset expects it."""
    (tmp_path / "node_modules").symlink_to(ROOT / "node_modules")
    (tmp_path / "spectral.yaml").write_text(RULESET.read_text())
    (tmp_path / SPEC_NAME).parent.mkdir(parents=True)
    spec = yaml.safe_load(SPEC_PATH.read_text())

    def run(mutate: Callable[[dict[str, Any]], None]) -> set[str]:
        changed = copy.deepcopy(spec)
        mutate(changed)
        (tmp_path / SPEC_NAME).write_text(yaml.safe_dump(changed, sort_keys=False))
        return codes(lint(tmp_path))

    return run


def _operation(spec: dict[str, Any], operation_id: str) -> dict[str, Any]:
    for item in spec["paths"].values():
        for operation in item.values():
            if isinstance(operation, dict) and operation.get("operationId") == operation_id:
                return operation
    raise KeyError(operation_id)


def test_an_operation_id_that_is_not_a_camel_case_verb_is_an_error(broken: Any) -> None:
    def mutate(spec: dict[str, Any]) -> None:
        _operation(spec, "listAdmins")["operationId"] = (
            "support_requests.handlers.admin.list_admins"
        )

    assert broken(mutate) == {"support-operation-id-is-a-verb"}


def test_a_repeated_operation_id_is_an_error(broken: Any) -> None:
    def mutate(spec: dict[str, Any]) -> None:
        _operation(spec, "listAdmins")["operationId"] = "listQueue"

    assert "operation-operationId-unique" in broken(mutate)


def test_a_missing_operation_id_is_an_error(broken: Any) -> None:
    def mutate(spec: dict[str, Any]) -> None:
        del _operation(spec, "listAdmins")["operationId"]

    assert "support-operation-id-present" in broken(mutate)


def test_an_error_response_that_is_not_problem_json_is_an_error(broken: Any) -> None:
    def mutate(spec: dict[str, Any]) -> None:
        _operation(spec, "listAdmins")["responses"]["418"] = {
            "description": "Plain JSON error.",
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Problem"}}},
        }

    assert "support-errors-are-problem-json" in broken(mutate)


def test_a_success_body_without_the_envelope_is_an_error(broken: Any) -> None:
    def mutate(spec: dict[str, Any]) -> None:
        envelope = spec["components"]["schemas"]["AdminsEnvelope"]
        envelope["required"] = ["message"]
        envelope["properties"]["items"] = envelope["properties"].pop("data")

    assert "support-success-is-an-envelope" in broken(mutate)


def test_the_owasp_ruleset_is_in_force(broken: Any) -> None:
    def mutate(spec: dict[str, Any]) -> None:
        spec["components"]["schemas"]["Admin"]["properties"]["nickname"] = {"type": "string"}
        del _operation(spec, "listAdmins")["responses"]["429"]

    found = broken(mutate)
    assert {
        "owasp:api4:2023-string-limit",
        "owasp:api4:2023-string-restricted",
        "owasp:api4:2023-rate-limit-responses-429",
    } <= found


def test_free_text_exemptions_cover_only_the_listed_fields(broken: Any) -> None:
    def mutate(spec: dict[str, Any]) -> None:
        spec["components"]["schemas"]["Admin"]["properties"]["nickname"] = {
            "type": "string",
            "maxLength": 50,
        }

    assert broken(mutate) == {"owasp:api4:2023-string-restricted"}
