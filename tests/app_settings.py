"""Which app settings the code reads, collected from the code itself by an AST scan, for the tests
that check each is set (tests/test_infra.py: the Bicep template) and documented (tests/test_readme.py:
README.md and local.settings.json.example).

:func:`app_modules` follows the imports of a root module (``function_app`` by default: the Function;
``shared.cli`` for the CLI), at module level and inside functions; :func:`code_settings` finds the reads
in them: ``os.environ[...]``, ``environ.get(...)``, ``getenv(...)``, helpers called as
``f(environ, "NAME")``, ``%NAME%`` binding expressions and ``connection="NAME"`` identity-based
connections.
"""

from __future__ import annotations

import ast
import re
from functools import lru_cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _module_file(name: str) -> Path | None:
    base = ROOT.joinpath(*name.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


@lru_cache(maxsize=None)
def app_modules(root: str = "function_app") -> tuple[Path, ...]:
    """The project's modules that ``root`` (default ``function_app.py``) imports, directly or not, at
    module level or inside functions (the code imports lazily for cold start). The CLI, tests and
    benchmarks are not part of the Function."""
    seen: dict[str, Path] = {}
    todo = [root]
    while todo:
        name = todo.pop()
        path = _module_file(name)
        if path is None or name in seen:
            continue
        seen[name] = path
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        parents = [".".join(name.split(".")[:i]) for i in range(1, name.count(".") + 1)]
        todo.extend(parents)
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                todo.extend(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")
                    base = base[: len(base) - (node.level - 1)] if node.level > 1 else base
                    mod = ".".join([*base, node.module] if node.module else base)
                else:
                    mod = node.module or ""
                todo.append(mod)
                todo.extend(f"{mod}.{alias.name}" for alias in node.names)
    return tuple(sorted(seen.values()))


def _is_environ(node: ast.AST) -> bool:
    """``os.environ``, or a mapping parameter named ``environ`` (``from_settings(environ=os.environ)``)."""
    return (isinstance(node, ast.Name) and node.id == "environ") or (
        isinstance(node, ast.Attribute) and node.attr == "environ")


def _const(node: ast.AST) -> str | None:
    return node.value if isinstance(node, ast.Constant) and isinstance(node.value, str) else None


@lru_cache(maxsize=None)
def code_settings(root: str = "function_app") -> tuple[dict, dict, list]:
    """``(settings, connections, dynamic)``: app setting name → where it is read; identity-based
    connection prefix (``connection="X"`` of a trigger or binding) → where; reads whose name is not a
    literal (each one a gap in this scan unless it is a helper's parameter)."""
    settings: dict[str, str] = {}
    connections: dict[str, str] = {}
    dynamic: list[str] = []
    for path in app_modules(root):
        rel = str(path.relative_to(ROOT))
        tree = ast.parse(path.read_text(), rel)
        params_of: dict[ast.AST, set] = {}
        for func in ast.walk(tree):
            if isinstance(func, (ast.FunctionDef, ast.AsyncFunctionDef)):
                names = {a.arg for a in func.args.args + func.args.kwonlyargs + func.args.posonlyargs}
                for inner in ast.walk(func):
                    params_of.setdefault(inner, set()).update(names)

        def read(name_node: ast.AST, node: ast.AST) -> None:
            name = _const(name_node)
            where = f"{rel}:{node.lineno}"
            if name is not None:
                settings.setdefault(name, where)
            elif not (isinstance(name_node, ast.Name) and name_node.id in params_of.get(node, set())):
                dynamic.append(f"{where}: {ast.unparse(node)}")

        for node in ast.walk(tree):
            if isinstance(node, ast.Call):
                f = node.func
                if isinstance(f, ast.Attribute) and f.attr in ("get", "pop", "setdefault") and _is_environ(f.value) and node.args:
                    read(node.args[0], node)
                elif ((isinstance(f, ast.Attribute) and f.attr == "getenv") or (isinstance(f, ast.Name) and f.id == "getenv")) and node.args:
                    read(node.args[0], node)
                elif len(node.args) >= 2 and _is_environ(node.args[0]) and _const(node.args[1]) is not None:
                    read(node.args[1], node)  # helpers: number(environ, "NOTIFY_MAX_ATTEMPTS", 5)
                for kw in node.keywords:
                    if kw.arg == "connection" and _const(kw.value):
                        connections.setdefault(_const(kw.value), f"{rel}:{node.lineno}")
            elif isinstance(node, ast.Subscript) and _is_environ(node.value):
                read(node.slice, node)
            elif isinstance(node, ast.Compare) and any(_is_environ(c) for c in node.comparators):
                read(node.left, node)
            elif _const(node) and re.fullmatch(r"%[A-Za-z_][A-Za-z0-9_]*%", _const(node)):
                settings.setdefault(_const(node).strip("%"), f"{rel}:{node.lineno}")  # binding expressions
    return settings, connections, dynamic


# Settings the code reads that the template must NOT set: each holds a connection string (an account
# key or SAS) and has an identity-based replacement, or exists for local testing only.
NOT_IN_AZURE = {
    "AzureWebJobsStorage": "connection string; the template sets identity-based AzureWebJobsStorage__*",
    "NOTIFY_STORAGE_CONNECTION": "connection string (local/Azurite); in Azure the forwarder uses AzureWebJobsStorage__*",
    "REGISTRY_STORAGE_CONNECTION": "connection string (local/Azurite); in Azure the registry uses AzureWebJobsStorage__*",
    "KEY_VAULT_CA_FILE": "CA bundle of the local Key Vault test server",
    "WEBSITE_AUTH_ENABLED": "set by App Service when App Service Authentication is on; set by hand it would "
                            "defeat functions/_auth.py's check that X-MS-CLIENT-PRINCIPAL can be trusted",
}

# Settings read by libraries the app configures rather than by its own code.
LIBRARY_SETTINGS = {
    "AZURE_CLIENT_ID": "DefaultAzureCredential: selects the user-assigned identity",
    "APPLICATIONINSIGHTS_CONNECTION_STRING": "Functions host: telemetry destination",
    "APPLICATIONINSIGHTS_AUTHENTICATION_STRING": "Functions host: Entra auth for telemetry",
}
