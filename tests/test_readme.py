"""README.md and local.settings.json.example against the code (issue 14): every app setting the code
reads is listed once in the README's App settings table and in the example, every CLI environment
variable in the CLI section, every benchmark with the one command that runs it, one interpreter
spelling, and the timeout the README cites is host.json's."""

from __future__ import annotations

import json
import re
from pathlib import Path

from tests.app_settings import LIBRARY_SETTINGS, code_settings

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
EXAMPLE = json.loads((ROOT / "local.settings.json.example").read_text())["Values"]
#: Settings of the Functions host itself, which the app's code does not read.
HOST_SETTINGS = {"FUNCTIONS_WORKER_RUNTIME", "AzureWebJobsFeatureFlags"}
#: Read by the code but set by the platform: never in the example (set by hand it would defeat the check).
PLATFORM_SET = {"WEBSITE_AUTH_ENABLED": "App Service sets it when App Service Authentication is on"}


def _section(title: str) -> str:
    start = README.index(f"\n## {title}\n")
    end = README.find("\n## ", start + 1)
    return README[start:end if end > 0 else None]


def _table_names(text: str) -> list[str]:
    names = []
    for line in text.splitlines():
        if line.startswith("| `"):
            names += re.findall(r"`([A-Za-z_][A-Za-z0-9_]*)`", line.split("|")[1])
    return names


def required_settings() -> set[str]:
    settings, connections, _ = code_settings()
    assert connections, "the scan lost the identity-based connections"
    return set(settings) | set(LIBRARY_SETTINGS)


def _connections_covered(names) -> list[str]:
    """Identity-based connections (``connection="X"``) are set as ``X`` or ``X__<property>``."""
    return sorted(p for p in code_settings()[1] if not any(n == p or n.startswith(p + "__") for n in names))


def test_every_app_setting_is_in_the_readme_table_once():
    names = _table_names(_section("App settings"))
    duplicates = sorted({n for n in names if names.count(n) > 1})
    assert not duplicates, f"listed more than once in README 'App settings': {duplicates}"
    missing = sorted(required_settings() - set(names))
    assert not missing, f"app settings the code reads but README 'App settings' does not list: {missing}"
    stale = sorted(set(names) - required_settings() - HOST_SETTINGS)
    assert not stale, f"README 'App settings' lists settings nothing reads: {stale}"
    assert not _connections_covered(names), f"connections README 'App settings' does not list: {_connections_covered(names)}"


def test_every_app_setting_is_in_local_settings_example():
    missing = sorted(required_settings() - set(EXAMPLE) - set(PLATFORM_SET))
    assert not missing, f"app settings the code reads but local.settings.json.example lacks: {missing}"
    for name, why in PLATFORM_SET.items():
        assert name in code_settings()[0], f"{name} is no longer read: drop it from PLATFORM_SET"
        assert name not in EXAMPLE, f"{name} must not be in the example: {why}"
    stale = sorted(set(EXAMPLE) - required_settings() - HOST_SETTINGS)
    assert not stale, f"local.settings.json.example holds settings nothing reads: {stale}"
    assert not _connections_covered(EXAMPLE), f"connections the example lacks: {_connections_covered(EXAMPLE)}"


def test_every_cli_environment_variable_is_documented():
    app = set(code_settings()[0])
    cli_only = set(code_settings("shared.cli")[0]) - app
    assert {"GIT_PASSWORD", "FLUX_SYSTEM_NAMESPACE", "KUBECONFIG"} <= cli_only
    names = _table_names(_section("CLI"))
    assert cli_only <= set(names), f"CLI environment variables missing from README 'CLI': {sorted(cli_only - set(names))}"


def test_one_interpreter_spelling():
    """Only .venv/bin/python has the dependencies; a bare ``python -m``/``python bench/...`` fails."""
    bare = [m.group(0) for m in re.finditer(r"(?<![\w/.-])python3? (-m \S+|\S+\.py)", README)]
    assert not bare, f"commands spelled without .venv/bin/python: {bare}"


def test_every_benchmark_is_documented_once_with_its_command():
    for path in sorted((ROOT / "bench").glob("*.py")):
        if path.name.startswith("_"):  # a helper the benchmarks share (bench/_kube_hosts.py), not one
            continue
        command = f".venv/bin/python -m bench.{path.stem}"
        assert README.count(command) == 1, f"{path.name}: README should give '{command}' exactly once"
        assert command in path.read_text(), f"{path.name}: its docstring should give '{command}'"
        assert f"bench/{path.name}" not in README, f"{path.name}: spelled as a path too"


def test_the_timeout_the_readme_cites_is_host_json():
    value = json.loads((ROOT / "host.json").read_text())["functionTimeout"]
    h, m, s = (int(x) for x in value.split(":"))
    minutes = h * 60 + m + s / 60
    cited = re.findall(r"(\d+)-minute (?:function |Consumption-plan |Function )?timeout", README)
    assert cited, "the README no longer cites the function timeout"
    assert {float(c) for c in cited} == {minutes}, (cited, value)


def test_every_deployment_parameter_is_in_the_deploy_section():
    """Each ``param`` of infra/main.bicep, and each azd environment variable main.parameters.json
    maps to one, is named in README "Deploy to Azure": a parameter nobody can find is not set."""
    import json
    import re

    section = README.split("## Deploy to Azure", 1)[1].split("\n## ", 1)[0]
    params = re.findall(r"^param (\w+) ", (ROOT / "infra" / "main.bicep").read_text(), re.M)
    assert len(params) > 10
    missing = [p for p in params if f"`{p}`" not in section]
    assert not missing, f"infra/main.bicep parameters not in README Deploy to Azure: {missing}"
    mapped = json.loads((ROOT / "infra" / "main.parameters.json").read_text())["parameters"]
    variables = [re.match(r"\$\{(\w+)", v["value"]).group(1) for v in mapped.values() if isinstance(v["value"], str)]
    missing = [v for v in variables if v not in section]
    assert not missing, f"azd environment variables not in README Deploy to Azure: {missing}"
