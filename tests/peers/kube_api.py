"""Kubernetes API test server: a loopback HTTPS server the real ``kubernetes`` client talks to.

It reproduces the exchanges recorded from a real kube-apiserver 1.36 in ``../shared/kube-contract/``
(``tests/test_kube_contract.py`` replays them): discovery, GET/LIST/POST/PUT/DELETE, JSON merge patch,
server-side apply with managedFields, conflicts and ``force``, ``dryRun=All``, CRDs that become
``Established`` ~50 ms after creation and only then serve their kinds, CRD schema pruning, defaulting and
validation, Secret ``stringData``, bearer-token auth and TLS from a trustme CA.

Fixtures (this module is a pytest plugin, see ``tests/conftest.py``):

* ``kube_server``: a started :class:`KubeApiServer` (fresh per test);
* ``local_kube_server``: the same, or ``None`` when ``TEST_KUBECONFIG`` names a real cluster;
* ``kubeconfig_text``: the YAML text of the file named by ``TEST_KUBECONFIG`` when set, else the
  local server's kubeconfig.

Authentication: ``Authorization: Bearer <server.token>`` or a TLS client certificate issued by the
server's CA (``kubeconfig(client_cert=True)``); anything else is 401.

Entra ID mode (:meth:`KubeApiServer.enable_entra`), as an AKS cluster with Microsoft Entra ID and Azure
RBAC: only bearer tokens of the token peer (:mod:`tests.peers.entra_tokens`) for the AKS server
application (audience ``6dae42f8-4368-4678-94ff-3960e28e3630``) are accepted, plus client certificates
(local accounts) unless disabled; any other credential, an expired token or one for another audience is
401. The caller is the token's ``oid``; what it may do comes from :meth:`KubeApiServer.bind` (the AKS
built-in roles RBAC Cluster Admin, Writer, Reader, cluster-wide or on a namespace). Discovery is open to
every authenticated caller (``system:discovery``); any other request without a role that allows it is
403 with AKS's message (``... User does not have access to the resource in Azure. Update role assignment
to allow access.``).

Known gaps versus the real API: no watch, no aggregated discovery, no protobuf/CBOR, no admission
beyond namespace existence, no CEL (``x-kubernetes-validations``) evaluation, no OpenAPI schema for
built-in kinds (only their string maps are type-checked, so unknown built-in fields are accepted), lists inside objects are
atomic for server-side apply (no ``k:{...}`` merge keys, so list items are never merged), only a few
built-in defaults (Namespace, Service, Deployment, Secret), no garbage collection, finalizers or
graceful deletion (a deleted Namespace takes its objects with it at once), strategic merge patch is
handled as a JSON merge patch, no paging, and no 2 s delay on the first POST to a fresh CRD (07d).
"""

from __future__ import annotations

import base64
import copy
import datetime
import hashlib
import json
import os
import random
import re
import secrets
import socket
import ssl
import string
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, NamedTuple
from urllib.parse import parse_qs, unquote, urlsplit

import pytest
import trustme
import yaml

try:  # libyaml is installed in the venv; fall back to the pure-Python loader elsewhere
    _YamlLoader = yaml.CSafeLoader
except AttributeError:  # pragma: no cover
    _YamlLoader = yaml.SafeLoader

_MISSING = object()
_SELF = object()

CRUD_VERBS = ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"]
CR_VERBS = ["delete", "deletecollection", "get", "list", "patch", "create", "update", "watch"]
SUB_VERBS = ["get", "patch", "update"]

SERVER_MANAGER = "kube-apiserver"


class LoggedRequest(NamedTuple):
    method: str
    path: str
    status: int


class ReceivedRequest(NamedTuple):
    """A request as it arrived, before authentication: headers (names lower-cased) and body."""

    method: str
    path: str
    headers: dict
    body: bytes


@dataclass
class Resource:
    """One served resource (a kind at a group/version) and how the server treats it."""

    group: str
    version: str
    plural: str
    singular: str
    kind: str
    namespaced: bool
    verbs: list = field(default_factory=lambda: list(CRUD_VERBS))
    short_names: list = field(default_factory=list)
    categories: list = field(default_factory=list)
    subresources: list = field(default_factory=list)  # discovery entries without the "name" prefix
    status_subresource: bool = False
    generation: bool = False
    crd: str | None = None  # name of the defining CRD for custom resources
    schema: dict | None = None
    has_cel: bool = False
    served_at: float = 0.0  # time.monotonic() from which a custom kind is served

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def qualified(self) -> str:
        """``secrets`` or ``gitrepositories.source.toolkit.fluxcd.io`` (used in error messages)."""
        return f"{self.plural}.{self.group}" if self.group else self.plural

    @property
    def kind_qualified(self) -> str:
        return f"{self.kind}.{self.group}" if self.group else self.kind

    @property
    def list_kind(self) -> str:
        return self.kind + "List"

    def storage_version_hash(self) -> str:
        # kube-apiserver: base64(sha256("<group>/<version>/<kind>")[:8]) (matches 01c, 01d, 05b)
        digest = hashlib.sha256(f"{self.group}/{self.version}/{self.kind}".encode()).digest()
        return base64.b64encode(digest[:8]).decode()

    def discovery(self) -> list[dict]:
        entry: dict[str, Any] = {
            "name": self.plural,
            "singularName": self.singular,
            "namespaced": self.namespaced,
            "kind": self.kind,
            "verbs": list(self.verbs),
        }
        if self.short_names:
            entry["shortNames"] = list(self.short_names)
        if self.categories:
            entry["categories"] = list(self.categories)
        entry["storageVersionHash"] = self.storage_version_hash()
        out = [entry]
        for sub in self.subresources:
            item: dict[str, Any] = {"name": f"{self.plural}/{sub['name']}", "singularName": "",
                                    "namespaced": self.namespaced}
            if "group" in sub:
                item["group"] = sub["group"]
                item["version"] = sub["version"]
            item["kind"] = sub.get("kind", self.kind)
            item["verbs"] = list(sub.get("verbs", SUB_VERBS))
            out.append(item)
        return out


def _builtin_resources() -> list[Resource]:
    status = {"name": "status"}
    scale = {"name": "scale", "group": "autoscaling", "version": "v1", "kind": "Scale", "verbs": SUB_VERBS}
    r = Resource
    return [
        # core/v1 (order of /api/v1 is alphabetical by resource name)
        r("", "v1", "configmaps", "configmap", "ConfigMap", True, short_names=["cm"]),
        r("", "v1", "namespaces", "namespace", "Namespace", False,
          verbs=["create", "delete", "get", "list", "patch", "update", "watch"], short_names=["ns"],
          subresources=[{"name": "finalize", "verbs": ["update"]}, status], status_subresource=True),
        r("", "v1", "resourcequotas", "resourcequota", "ResourceQuota", True, short_names=["quota"],
          subresources=[status], status_subresource=True),
        r("", "v1", "secrets", "secret", "Secret", True),
        r("", "v1", "serviceaccounts", "serviceaccount", "ServiceAccount", True, short_names=["sa"],
          subresources=[{"name": "token", "group": "authentication.k8s.io", "version": "v1",
                         "kind": "TokenRequest", "verbs": ["create"]}]),
        r("", "v1", "services", "service", "Service", True, short_names=["svc"], categories=["all"],
          subresources=[{"name": "proxy", "kind": "ServiceProxyOptions",
                         "verbs": ["create", "delete", "get", "patch", "update"]}, status],
          status_subresource=True),
        # apps/v1 (as 01d)
        r("apps", "v1", "controllerrevisions", "controllerrevision", "ControllerRevision", True),
        r("apps", "v1", "daemonsets", "daemonset", "DaemonSet", True, short_names=["ds"], categories=["all"],
          subresources=[status], status_subresource=True, generation=True),
        r("apps", "v1", "deployments", "deployment", "Deployment", True, short_names=["deploy"],
          categories=["all"], subresources=[scale, status], status_subresource=True, generation=True),
        r("apps", "v1", "replicasets", "replicaset", "ReplicaSet", True, short_names=["rs"], categories=["all"],
          subresources=[scale, status], status_subresource=True, generation=True),
        r("apps", "v1", "statefulsets", "statefulset", "StatefulSet", True, short_names=["sts"],
          categories=["all"], subresources=[scale, status], status_subresource=True, generation=True),
        # networking.k8s.io/v1
        r("networking.k8s.io", "v1", "ingressclasses", "ingressclass", "IngressClass", False),
        r("networking.k8s.io", "v1", "ingresses", "ingress", "Ingress", True, short_names=["ing"],
          subresources=[status], status_subresource=True, generation=True),
        r("networking.k8s.io", "v1", "networkpolicies", "networkpolicy", "NetworkPolicy", True,
          short_names=["netpol"], generation=True),
        # rbac.authorization.k8s.io/v1
        r("rbac.authorization.k8s.io", "v1", "clusterrolebindings", "clusterrolebinding",
          "ClusterRoleBinding", False),
        r("rbac.authorization.k8s.io", "v1", "clusterroles", "clusterrole", "ClusterRole", False),
        r("rbac.authorization.k8s.io", "v1", "rolebindings", "rolebinding", "RoleBinding", True),
        r("rbac.authorization.k8s.io", "v1", "roles", "role", "Role", True),
        # apiextensions.k8s.io/v1
        r("apiextensions.k8s.io", "v1", "customresourcedefinitions", "customresourcedefinition",
          "CustomResourceDefinition", False, short_names=["crd", "crds"], categories=["api-extensions"],
          subresources=[status], status_subresource=True, generation=True),
    ]


# Built-in groups in the real server's order (01b), restricted to those served here.
_BUILTIN_GROUP_ORDER = ["apps", "networking.k8s.io", "rbac.authorization.k8s.io", "apiextensions.k8s.io"]

# Top-level key order of built-in kinds after kind/apiVersion/metadata (Go struct order).
_KIND_KEY_ORDER = {
    "Secret": ["immutable", "data", "type"],
    "ConfigMap": ["immutable", "data", "binaryData"],
    "ServiceAccount": ["secrets", "imagePullSecrets", "automountServiceAccountToken"],
    "ClusterRole": ["rules", "aggregationRule"],
    "Role": ["rules"],
    "ClusterRoleBinding": ["subjects", "roleRef"],
    "RoleBinding": ["subjects", "roleRef"],
}
_META_ORDER = ["name", "generateName", "namespace", "selfLink", "uid", "resourceVersion", "generation",
               "creationTimestamp", "deletionTimestamp", "deletionGracePeriodSeconds", "labels", "annotations",
               "ownerReferences", "finalizers", "managedFields"]
_MF_ORDER = ["manager", "operation", "apiVersion", "time", "fieldsType", "fieldsV1", "subresource"]
_SERVER_META = ("uid", "resourceVersion", "generation", "creationTimestamp", "managedFields", "selfLink",
                "deletionTimestamp", "deletionGracePeriodSeconds")

_DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_BLOCKING = {"FieldValueRequired", "FieldValueTypeInvalid", "FieldValueNotSupported", "FieldValueTooLong",
             "FieldValueTooMany"}


class ApiError(Exception):
    """An HTTP error answer: a Status object (or plain text for unknown paths)."""

    def __init__(self, code: int, body: Any, content_type: str = "application/json"):
        super().__init__(code)
        self.code = code
        self.body = body
        self.content_type = content_type


def _status(code: int, reason: str | None, message: str, details: dict | None = None) -> dict:
    body: dict[str, Any] = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                            "message": message}
    if reason:
        body["reason"] = reason
    if details is not None:
        body["details"] = details
    body["code"] = code
    return body


def _details(res: Resource, name: str, kind: str | None = None) -> dict:
    d: dict[str, Any] = {"name": name}
    if res.group:
        d["group"] = res.group
    d["kind"] = kind or res.plural
    return d


def _page_not_found() -> ApiError:
    return ApiError(404, "404 page not found\n", "text/plain; charset=utf-8")


def _not_found(res: Resource, name: str) -> ApiError:
    return ApiError(404, _status(404, "NotFound", f'{res.qualified} "{name}" not found', _details(res, name)))


def _bad_request(message: str) -> ApiError:
    return ApiError(400, _status(400, "BadRequest", message))


def _invalid(res: Resource, name: str, causes: list[dict]) -> ApiError:
    parts = [f"{c['field']}: {c['message']}" for c in causes]
    joined = parts[0] if len(parts) == 1 else "[" + ", ".join(parts) + "]"
    details = _details(res, name, kind=res.kind)
    details["causes"] = causes
    return ApiError(422, _status(422, "Invalid", f'{res.kind_qualified} "{name}" is invalid: {joined}', details))


def _cause(reason: str, message: str, fld: str) -> dict:
    return {"reason": reason, "message": message, "field": fld}


def _condition_true(obj: dict, ctype: str) -> bool:
    return any(c.get("type") == ctype and c.get("status") == "True"
               for c in (obj.get("status") or {}).get("conditions") or [])


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


# ---------------------------------------------------------------------------------------------------
# field sets (managedFields) - paths are tuples of "f:<key>" elements; lists are atomic leaves


def _leaf_paths(obj: dict, prefix: tuple = ()) -> set:
    out: set = set()
    for k, v in obj.items():
        p = prefix + ("f:" + k,)
        if isinstance(v, dict) and v:
            out |= _leaf_paths(v, p)
        else:
            out.add(p)
    return out


def _changed_paths(old: dict, new: dict, prefix: tuple = ()) -> set:
    """Paths set or changed by an Update from ``old`` to ``new``; a newly added map below the top
    level is itself a member (shown as ``"."`` in fieldsV1, as 12a)."""
    out: set = set()
    for k, v in new.items():
        p = prefix + ("f:" + k,)
        ov = old.get(k, _MISSING) if isinstance(old, dict) else _MISSING
        if isinstance(v, dict) and v:
            if not isinstance(ov, dict):
                if len(p) >= 2:
                    out.add(p)
                out |= _changed_paths({}, v, p)
            else:
                out |= _changed_paths(ov, v, p)
        elif ov is _MISSING or ov != v:
            out.add(p)
    return out


def _removed_paths(old: dict, new: dict, prefix: tuple = ()) -> set:
    out: set = set()
    for k, v in old.items():
        p = prefix + ("f:" + k,)
        nv = new.get(k, _MISSING) if isinstance(new, dict) else _MISSING
        if nv is _MISSING:
            out.add(p)
        elif isinstance(v, dict) and isinstance(nv, dict):
            out |= _removed_paths(v, nv, p)
    return out


def _to_fieldsv1(paths: set) -> dict:
    tree: dict = {}
    for p in paths:
        node = tree
        for el in p:
            node = node.setdefault(el, {})
        node[_SELF] = True

    def conv(node: dict) -> dict:
        out: dict = {}
        children = {k: v for k, v in node.items() if k is not _SELF}
        if node.get(_SELF) and children:
            out["."] = {}
        for k in sorted(children):
            out[k] = conv(children[k])
        return out

    return conv(tree)


def _from_fieldsv1(fv: dict, prefix: tuple = ()) -> set:
    out: set = set()
    for k, v in fv.items():
        if k == ".":
            out.add(prefix)
        elif v:
            out |= _from_fieldsv1(v, prefix + (k,))
        else:
            out.add(prefix + (k,))
    return out


def _get_path(obj: Any, path: tuple) -> Any:
    for el in path:
        if not isinstance(obj, dict) or not el.startswith("f:"):
            return _MISSING
        obj = obj.get(el[2:], _MISSING)
        if obj is _MISSING:
            return _MISSING
    return obj


def _delete_path(obj: dict, path: tuple) -> None:
    parents = []
    node: Any = obj
    for el in path[:-1]:
        if not isinstance(node, dict) or not el.startswith("f:") or not isinstance(node.get(el[2:]), dict):
            return
        parents.append((node, el[2:]))
        node = node[el[2:]]
    if isinstance(node, dict) and path and path[-1].startswith("f:"):
        node.pop(path[-1][2:], None)
        # drop maps the removal left empty
        while parents and not node:
            parent, key = parents.pop()
            parent.pop(key, None)
            node = parent


def _deep_merge(base: dict, patch: dict) -> dict:
    """Apply semantics for maps: recursive merge; lists and scalars replace; null removes."""
    for k, v in patch.items():
        if v is None:
            base.pop(k, None)
        elif isinstance(v, dict) and isinstance(base.get(k), dict):
            _deep_merge(base[k], v)
        else:
            base[k] = copy.deepcopy(v)
    return base


def _json_merge_patch(target: Any, patch: Any) -> Any:
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for k, v in patch.items():
        if v is None:
            result.pop(k, None)
        else:
            result[k] = _json_merge_patch(result.get(k), v)
    return result


def _json_patch(doc: Any, ops: list) -> Any:
    """RFC 6902 subset: add, remove, replace, test."""
    doc = copy.deepcopy(doc)
    for op in ops:
        parts = [p.replace("~1", "/").replace("~0", "~") for p in op["path"].split("/")[1:]]
        parent = doc
        for p in parts[:-1]:
            parent = parent[int(p)] if isinstance(parent, list) else parent[p]
        last = parts[-1] if parts else None
        kind = op["op"]
        if kind == "test":
            cur = parent[int(last)] if isinstance(parent, list) else parent.get(last, _MISSING)
            if cur != op["value"]:
                raise ApiError(422, _status(422, "Invalid", f"the test operation failed for {op['path']}"))
        elif kind == "remove":
            if isinstance(parent, list):
                parent.pop(int(last))
            else:
                parent.pop(last)
        elif kind in ("add", "replace"):
            if isinstance(parent, list):
                if last == "-":
                    parent.append(op["value"])
                elif kind == "add":
                    parent.insert(int(last), op["value"])
                else:
                    parent[int(last)] = op["value"]
            else:
                parent[last] = op["value"]
        else:
            raise _bad_request(f"unsupported json patch operation {kind!r}")
    return doc


# ---------------------------------------------------------------------------------------------------
# OpenAPI v3 schema handling for custom resources (a reasonable subset)


def _go_repr(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, dict):
        return "map[string]interface {}{" + ", ".join(f"{json.dumps(k)}:{_go_repr(x)}" for k, x in v.items()) + "}"
    if isinstance(v, list):
        return "[]interface {}{" + ", ".join(_go_repr(x) for x in v) + "}"
    return "<nil>"


def _json_type(v: Any) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "boolean"
    if isinstance(v, int):
        return "integer"
    if isinstance(v, float):
        return "number"
    if isinstance(v, str):
        return "string"
    if isinstance(v, list):
        return "array"
    return "object"


def _type_ok(schema: dict, v: Any) -> bool:
    t = schema.get("type")
    if schema.get("x-kubernetes-int-or-string"):
        return isinstance(v, (int, str)) and not isinstance(v, bool)
    if not t:
        return True
    if v is None:
        return bool(schema.get("nullable"))
    actual = _json_type(v)
    if t == "number":
        return actual in ("integer", "number")
    return actual == t


def _typed_error(schema: dict, v: Any, path: str) -> str | None:
    """Server-side apply converts the applied configuration to the schema's type first; errors there
    are 500s (07a: 'expected string', 07e: 'field not declared in schema')."""
    if v is None:
        return None
    if schema.get("x-kubernetes-int-or-string"):
        if isinstance(v, (int, str)) and not isinstance(v, bool):
            return None
        return f"{path}: expected string, got &value.valueUnstructured{{Value:{_go_repr(v)}}}"
    t = schema.get("type")
    expected = {"string": "string", "integer": "numeric (int or float)", "number": "numeric (int or float)",
                "boolean": "boolean", "object": "map", "array": "list"}.get(t or "")
    if t and not _type_ok(schema, v):
        return f"{path}: expected {expected}, got &value.valueUnstructured{{Value:{_go_repr(v)}}}"
    if isinstance(v, dict) and (t == "object" or "properties" in schema):
        props = schema.get("properties") or {}
        addl = schema.get("additionalProperties")
        preserve = schema.get("x-kubernetes-preserve-unknown-fields")
        for k, x in v.items():
            if k in props:
                err = _typed_error(props[k], x, f"{path}.{k}")
            elif isinstance(addl, dict):
                err = _typed_error(addl, x, f"{path}.{k}")
            elif addl is True or preserve:
                err = None
            else:
                err = f"{path}.{k}: field not declared in schema"
            if err:
                return err
    if isinstance(v, list) and isinstance(schema.get("items"), dict):
        for i, x in enumerate(v):
            err = _typed_error(schema["items"], x, f"{path}[{i}]")
            if err:
                return err
    return None


def _root_typed_error(schema: dict, obj: dict) -> str | None:
    props = schema.get("properties") or {}
    for k, v in obj.items():
        if k in ("apiVersion", "kind", "metadata"):
            continue
        if k in props:
            err = _typed_error(props[k], v, f".{k}")
        elif schema.get("x-kubernetes-preserve-unknown-fields"):
            err = None
        else:
            err = f".{k}: field not declared in schema"
        if err:
            return err
    return None


def _prune(schema: dict, v: Any, path: str, warnings: list) -> Any:
    if isinstance(v, dict) and not schema.get("x-kubernetes-preserve-unknown-fields"):
        props = schema.get("properties")
        addl = schema.get("additionalProperties")
        if props is None and addl is None:
            return v
        for k in list(v):
            if props and k in props:
                v[k] = _prune(props[k], v[k], f"{path}.{k}" if path else k, warnings)
            elif isinstance(addl, dict):
                v[k] = _prune(addl, v[k], f"{path}.{k}" if path else k, warnings)
            elif addl is True:
                continue
            else:
                warnings.append(f"{path}.{k}" if path else k)
                del v[k]
    elif isinstance(v, dict) and schema.get("properties"):
        for k, s in schema["properties"].items():
            if k in v:
                v[k] = _prune(s, v[k], f"{path}.{k}" if path else k, warnings)
    elif isinstance(v, list) and isinstance(schema.get("items"), dict):
        return [_prune(schema["items"], x, f"{path}[{i}]", warnings) for i, x in enumerate(v)]
    return v


def _prune_root(schema: dict, obj: dict) -> list[str]:
    warnings: list[str] = []
    props = schema.get("properties") or {}
    for k in list(obj):
        if k in ("apiVersion", "kind", "metadata"):
            continue
        if k in props:
            obj[k] = _prune(props[k], obj[k], k, warnings)
        elif not schema.get("x-kubernetes-preserve-unknown-fields"):
            warnings.append(k)
            del obj[k]
    return warnings


def _default(schema: dict, v: Any) -> None:
    if isinstance(v, dict):
        props = schema.get("properties") or {}
        for k, s in props.items():
            if k not in v and "default" in s:
                v[k] = copy.deepcopy(s["default"])
            if k in v:
                _default(s, v[k])
        addl = schema.get("additionalProperties")
        if isinstance(addl, dict):
            for k in v:
                if k not in props:
                    _default(addl, v[k])
    elif isinstance(v, list) and isinstance(schema.get("items"), dict):
        for x in v:
            _default(schema["items"], x)


def _default_root(schema: dict, obj: dict) -> None:
    props = schema.get("properties") or {}
    for k, s in props.items():
        if k in ("apiVersion", "kind", "metadata"):
            continue
        if k not in obj and "default" in s:
            obj[k] = copy.deepcopy(s["default"])
        if k in obj:
            _default(s, obj[k])


def _validate(schema: dict, v: Any, path: str, out: list) -> None:
    if v is None:
        if not schema.get("nullable") and schema.get("type"):
            out.append(_cause("FieldValueTypeInvalid",
                              f'Invalid value: "null": {path} in body must be of type {schema["type"]}: "null"', path))
        return
    if not _type_ok(schema, v):
        actual = _json_type(v)
        out.append(_cause("FieldValueTypeInvalid",
                          f'Invalid value: "{actual}": {path} in body must be of type {schema["type"]}: "{actual}"',
                          path))
        return
    if "enum" in schema and v not in schema["enum"]:
        allowed = ", ".join(json.dumps(e) for e in schema["enum"])
        out.append(_cause("FieldValueNotSupported", f"Unsupported value: {json.dumps(v)}: supported values: {allowed}",
                          path))
    if isinstance(v, str):
        if "pattern" in schema:
            try:
                ok = re.search(schema["pattern"], v) is not None
            except re.error:
                ok = True
            if not ok:
                out.append(_cause("FieldValueInvalid",
                                  f"Invalid value: {json.dumps(v)}: {path} in body should match '{schema['pattern']}'",
                                  path))
        if "maxLength" in schema and len(v) > schema["maxLength"]:
            out.append(_cause("FieldValueTooLong", f"Too long: may not be more than {schema['maxLength']} bytes", path))
        if "minLength" in schema and len(v) < schema["minLength"]:
            out.append(_cause("FieldValueInvalid", f"Invalid value: {json.dumps(v)}: {path} in body should be at least "
                                                   f"{schema['minLength']} chars long", path))
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        if "minimum" in schema and v < schema["minimum"]:
            out.append(_cause("FieldValueInvalid", f"Invalid value: {v}: {path} in body should be greater than or "
                                                   f"equal to {schema['minimum']}", path))
        if "maximum" in schema and v > schema["maximum"]:
            out.append(_cause("FieldValueInvalid", f"Invalid value: {v}: {path} in body should be less than or "
                                                   f"equal to {schema['maximum']}", path))
    if isinstance(v, list):
        if "maxItems" in schema and len(v) > schema["maxItems"]:
            out.append(_cause("FieldValueTooMany", f"Too many: {len(v)}: must have at most {schema['maxItems']} items",
                              path))
        if "minItems" in schema and len(v) < schema["minItems"]:
            out.append(_cause("FieldValueInvalid", f"Invalid value: {len(v)}: {path} in body should have at least "
                                                   f"{schema['minItems']} items", path))
        if isinstance(schema.get("items"), dict):
            for i, x in enumerate(v):
                _validate(schema["items"], x, f"{path}[{i}]", out)
    if isinstance(v, dict):
        for req in schema.get("required") or []:
            if req not in v:
                out.append(_cause("FieldValueRequired", "Required value", f"{path}.{req}" if path else req))
        props = schema.get("properties") or {}
        addl = schema.get("additionalProperties")
        for k, x in v.items():
            sub = f"{path}.{k}" if path else k
            if k in props:
                _validate(props[k], x, sub, out)
            elif isinstance(addl, dict):
                _validate(addl, x, sub, out)


def _validate_root(schema: dict, obj: dict) -> list[dict]:
    out: list[dict] = []
    props = schema.get("properties") or {}
    for req in schema.get("required") or []:
        if req not in obj:
            out.append(_cause("FieldValueRequired", "Required value", req))
    for k, v in obj.items():
        if k in ("apiVersion", "kind", "metadata"):
            continue
        if k in props:
            _validate(props[k], v, k, out)
    return out


def _has_cel(schema: Any) -> bool:
    if isinstance(schema, dict):
        if "x-kubernetes-validations" in schema:
            return True
        return any(_has_cel(v) for v in schema.values())
    if isinstance(schema, list):
        return any(_has_cel(v) for v in schema)
    return False


def _version_priority(v: str) -> tuple:
    """Kubernetes version ordering: GA > beta > alpha > other, higher numbers first."""
    m = re.fullmatch(r"v(\d+)(?:(alpha|beta)(\d+))?", v)
    if not m:
        return (3, 0, 0, v)
    major = int(m.group(1))
    if not m.group(2):
        return (0, -major, 0, v)
    return (1 if m.group(2) == "beta" else 2, -major, -int(m.group(3)), v)


# ---------------------------------------------------------------------------------------------------
# the server


class _TLSServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, addr, handler, ssl_ctx: ssl.SSLContext):
        self.ssl_ctx = ssl_ctx
        self.connections: set = set()
        self.conn_lock = threading.Lock()
        super().__init__(addr, handler)

    def finish_request(self, request, client_address):
        # TLS handshake in the connection's own thread, so a slow client cannot block accept().
        with self.conn_lock:
            self.connections.add(request)
        try:
            request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            tls = self.ssl_ctx.wrap_socket(request, server_side=True)
        except (ssl.SSLError, OSError):
            return
        try:
            super().finish_request(tls, client_address)
        finally:
            try:
                tls.close()
            except OSError:
                pass

    def shutdown_request(self, request):
        with self.conn_lock:
            self.connections.discard(request)
        super().shutdown_request(request)

    def handle_error(self, request, client_address):  # quiet: clients drop keep-alive sockets
        pass


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "kube-api-test-server"
    timeout = 60

    def log_message(self, format, *args):  # noqa: A002
        pass

    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    self.rfile.readline()
                    break
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            return b"".join(chunks)
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n else b""

    def _serve(self):
        kube: KubeApiServer = self.server.kube  # type: ignore[attr-defined]
        body = self._body()
        try:
            peer = self.connection.getpeercert()  # verified against the CA when a client certificate was sent
        except (AttributeError, ValueError):
            peer = None
        with kube._lock:
            kube.received.append(ReceivedRequest(self.command, self.path,
                                                 {k.lower(): v for k, v in self.headers.items()}, body))
        code, payload, ctype, extra = kube.handle(self.command, self.path, self.headers, body,
                                                  client_cert=bool(peer))
        data = payload if isinstance(payload, bytes) else (
            payload.encode() if isinstance(payload, str) else json.dumps(payload, separators=(",", ":")).encode())
        lines = [f"HTTP/1.1 {code} {self.responses.get(code, ('',))[0]}",
                 f"Date: {self.date_time_string()}", f"Content-Type: {ctype}", f"Content-Length: {len(data)}"]
        lines += [f"{k}: {v}" for k, v in extra]
        # one write per response: headers and body in separate segments stall on delayed ACKs
        self.wfile.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + data)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _serve


class KubeApiServer:
    """A Kubernetes API server for tests on ``https://127.0.0.1:<random port>``.

    ``crd_establish_delay`` (s): time from a CRD's creation to ``Established=True`` (real: 29-72 ms);
    ``discovery_delay`` (s): further time until its kinds are served (real: 0-18 ms, 05a);
    ``missing_namespace_wait`` (s): wait before refusing a write into a missing namespace (real: 50 ms).
    """

    def __init__(self, *, token: str | None = None, crd_establish_delay: float = 0.05,
                 discovery_delay: float = 0.01, missing_namespace_wait: float = 0.05):
        self.token = token or secrets.token_urlsafe(24)
        #: A second token for a user RBAC allows to read and nothing else (writes answer 403).
        self.readonly_token = secrets.token_urlsafe(24)
        self.crd_establish_delay = crd_establish_delay
        self.discovery_delay = discovery_delay
        self.missing_namespace_wait = missing_namespace_wait
        #: Basic credentials (username, password) accepted like ``token``.
        self.basic_auth = ("admin", secrets.token_urlsafe(12))
        self.request_log: list[LoggedRequest] = []
        self.request_queries: list[dict[str, str]] = []  # parallel to request_log
        #: every request that reached the server, authenticated or not (see :class:`ReceivedRequest`)
        self.received: list[ReceivedRequest] = []
        self._lock = threading.RLock()
        self._rv = 200
        self._resources: dict[tuple[str, str], dict[str, Resource]] = {}
        self._store: dict[tuple[str, str], dict[tuple[str, str], dict]] = {}
        self._timers: list[threading.Timer] = []
        for res in _builtin_resources():
            self._register(res)
        self._httpd: _TLSServer | None = None
        self._thread: threading.Thread | None = None
        self.ca = trustme.CA()
        self.url = ""
        #: Entra ID mode (see :meth:`enable_entra`): the accepted audience, or None (static tokens)
        self.entra_audience: str | None = None
        self.entra_local_accounts = True
        self.entra_bindings: dict[str, list[tuple[str, str | None]]] = {}
        #: object ids of the callers whose tokens were accepted, in order
        self.entra_callers: list[str] = []
        #: seconds each answer is held back, outside the store's lock (an API server a WAN away)
        self.latency = 0.0
        #: requests being answered now, and the most there ever were at once
        self.in_flight = 0
        self.max_in_flight = 0

    # -- lifecycle ------------------------------------------------------------------------------

    def start(self) -> "KubeApiServer":
        cert = self.ca.issue_cert("127.0.0.1", "localhost")
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        cert.configure_cert(ctx)
        # client certificates issued by the same CA authenticate too (like an AKS admin kubeconfig)
        ctx.verify_mode = ssl.CERT_OPTIONAL
        self.ca.configure_trust(ctx)
        self._httpd = _TLSServer(("127.0.0.1", 0), _Handler, ctx)
        self._httpd.kube = self  # type: ignore[attr-defined]
        port = self._httpd.server_address[1]
        self.url = f"https://127.0.0.1:{port}"
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                        name=f"kube-api-{port}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        for t in self._timers:
            t.cancel()
        httpd, self._httpd = self._httpd, None
        if httpd is None:
            return
        httpd.shutdown()
        httpd.server_close()
        with httpd.conn_lock:
            conns = list(httpd.connections)
        for c in conns:  # end keep-alive connections too, so pooled clients see the server gone
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        if self._thread:
            self._thread.join(timeout=5)

    def unreachable(self) -> None:
        """Stop listening; the URL (and kubeconfig) stay the same, connections are refused."""
        self.stop()

    def __enter__(self) -> "KubeApiServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def ca_pem(self) -> bytes:
        return self.ca.cert_pem.bytes()

    def kubeconfig(self, *, token: str | None = None, server: str | None = None, client_cert: bool = False,
                   basic: bool = False, user: dict | None = None, cluster: dict | None = None) -> str:
        """YAML text of a kubeconfig with the server URL, the CA as certificate-authority-data and a
        bearer token (``token`` overrides the right one, e.g. to test a rejected credential), or with
        ``client_cert=True`` a client certificate and key (client-certificate-data/client-key-data),
        or with ``basic=True`` the Basic credentials. ``user``/``cluster`` replace those mappings
        (to build hostile kubeconfigs)."""
        if user is not None or cluster is not None:
            cfg = yaml.safe_load(self.kubeconfig(token=token, server=server, client_cert=client_cert, basic=basic))
            if user is not None:
                cfg["users"][0]["user"] = user
            if cluster is not None:
                cfg["clusters"][0]["cluster"] = cluster
            return yaml.safe_dump(cfg, sort_keys=False)
        if basic:
            user = {"username": self.basic_auth[0], "password": self.basic_auth[1]}
        elif client_cert:
            leaf = self.ca.issue_cert("test-admin")
            user = {"client-certificate-data": base64.b64encode(leaf.cert_chain_pems[0].bytes()).decode(),
                    "client-key-data": base64.b64encode(leaf.private_key_pem.bytes()).decode()}
        if user is None:
            user = {"token": token if token is not None else self.token}
        cfg = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "test", "cluster": {
                "server": server or self.url,
                "certificate-authority-data": base64.b64encode(self.ca_pem).decode()}}],
            "users": [{"name": "test", "user": user}],
            "contexts": [{"name": "test", "context": {"cluster": "test", "user": "test"}}],
            "current-context": "test",
        }
        return yaml.safe_dump(cfg, sort_keys=False)

    def _basic_header(self) -> str:
        return "Basic " + base64.b64encode(":".join(self.basic_auth).encode()).decode()

    # -- test helpers -----------------------------------------------------------------------------

    def _find(self, api_version: str, kind: str) -> Resource | None:
        group, _, version = api_version.rpartition("/")
        for res in self._resources.get((group, version), {}).values():
            if res.kind == kind:
                return res
        return None

    def get_object(self, api_version: str, kind: str, name: str, namespace: str | None = None) -> dict | None:
        """The object as a GET would return it (read-time defaults included), or None."""
        with self._lock:
            res = self._find(api_version, kind)
            if res is None:
                return None
            key = ((namespace or "") if res.namespaced else "", name)
            obj = self._store.get((res.group, res.plural), {}).get(key)
            return self._render(res, self._read_form(res, obj)) if obj else None

    def set_status(self, api_version: str, kind: str, name: str, namespace: str | None, status: dict,
                   *, manager: str = "test-controller") -> dict:
        """Replace ``status`` as a controller would (an Update of the status subresource)."""
        with self._lock:
            res = self._find(api_version, kind)
            if res is None:
                raise KeyError(f"{api_version} {kind} is not served")
            key = ((namespace or "") if res.namespaced else "", name)
            old = self._store.get((res.group, res.plural), {}).get(key)
            if old is None:
                raise KeyError(f"{kind} {namespace}/{name} not found")
            new = copy.deepcopy(old)
            new["status"] = copy.deepcopy(status)
            entries = self._update_managed(res, old, new, manager, "status")
            out = self._commit(res, key, old, new, entries, manager, "Update", "status", dry=False)
            return out

    def objects(self, api_version: str, kind: str, namespace: str | None = None) -> list[dict]:
        with self._lock:
            res = self._find(api_version, kind)
            if res is None:
                return []
            items = self._store.get((res.group, res.plural), {})
            return [self._render(res, self._read_form(res, o)) for (ns, _), o in sorted(items.items())
                    if namespace is None or ns == namespace]

    # -- Entra ID mode -------------------------------------------------------------------------------

    #: AKS built-in roles of Azure RBAC for Kubernetes (learn.microsoft.com/azure/aks/manage-azure-rbac):
    #: Cluster Admin and Admin grant ``Microsoft.ContainerService/managedClusters/*`` (custom resources
    #: included); Writer and Reader list built-in resource types only, so no custom resource (a Flux
    #: GitRepository) and, for Writer, no roles or role bindings; Reader cannot read Secrets.
    ROLES = {"cluster-admin": "Azure Kubernetes Service RBAC Cluster Admin", "admin": "Azure Kubernetes Service RBAC Admin",
             "writer": "Azure Kubernetes Service RBAC Writer", "reader": "Azure Kubernetes Service RBAC Reader"}
    #: API groups of built-in kinds (the rest are custom resources)
    BUILTIN_GROUPS = frozenset({"", "apps", "batch", "autoscaling", "policy", "networking.k8s.io", "extensions",
                                "discovery.k8s.io", "events.k8s.io", "coordination.k8s.io", "storage.k8s.io",
                                "rbac.authorization.k8s.io", "apiextensions.k8s.io", "admissionregistration.k8s.io",
                                "scheduling.k8s.io", "node.k8s.io", "certificates.k8s.io"})

    def enable_entra(self, *, audience: str = "6dae42f8-4368-4678-94ff-3960e28e3630",
                     local_accounts: bool = True) -> "KubeApiServer":
        """Accept only Entra ID tokens of the token peer for ``audience`` (and, with ``local_accounts``, the
        client certificates of an admin kubeconfig); the static tokens stop working (401)."""
        self.entra_audience = audience
        self.entra_local_accounts = local_accounts
        return self

    def bind(self, oid: str, role: str, namespace: str | None = None) -> None:
        """Assign ``role`` (``cluster-admin``, ``admin``, ``writer``, ``reader``: see :attr:`ROLES`) to the
        identity ``oid``, on the cluster or, with ``namespace``, on that namespace only (all but
        cluster-admin on the cluster apply to namespaced objects only)."""
        if role not in self.ROLES:
            raise ValueError(f"unknown role {role!r}")
        self.entra_bindings.setdefault(oid, []).append((role, namespace))

    def _entra_authorize(self, method: str, path: str, query: dict, auth: str, client_cert: bool) -> None:
        import jwt

        from tests.peers.entra_tokens import verify_jwt

        if client_cert and self.entra_local_accounts:  # kube-apiserver tries x509 before bearer tokens
            return
        scheme, _, token = auth.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise ApiError(401, _status(401, "Unauthorized", "Unauthorized"))
        try:
            claims = verify_jwt(token.strip(), audience=self.entra_audience)
        except jwt.PyJWTError:
            raise ApiError(401, _status(401, "Unauthorized", "Unauthorized")) from None
        oid = str(claims.get("oid"))
        with self._lock:
            self.entra_callers.append(oid)
        segs = [s for s in path.split("/") if s]
        if segs[:1] == ["api"]:
            group, rest = "", segs[2:]
        elif segs[:1] == ["apis"]:
            group, rest = (segs[1] if len(segs) > 1 else ""), segs[3:]
        else:  # /version, /healthz, /openapi...: non-resource URLs open to every authenticated user
            return
        if not rest:  # discovery
            return
        if rest[0] == "namespaces" and len(rest) >= 3:
            ns, plural, name = rest[1], rest[2], (rest[3] if len(rest) > 3 else None)
        else:
            ns, plural, name = None, rest[0], (rest[1] if len(rest) > 1 else None)
        verb = {"POST": "create", "PUT": "update", "PATCH": "patch"}.get(method)
        if verb is None:
            if method == "DELETE":
                verb = "delete" if name else "deletecollection"
            else:
                verb = "watch" if query.get("watch") in ("1", "true") else ("get" if name else "list")
        builtin = group in self.BUILTIN_GROUPS
        for role, scope in self.entra_bindings.get(oid, []):
            if role == "cluster-admin" and scope is None:
                return
            if ns is None or (scope is not None and scope != ns):
                continue
            if role in ("cluster-admin", "admin"):
                return
            if role == "writer" and builtin and group != "rbac.authorization.k8s.io":
                return
            if role == "reader" and builtin and verb in ("get", "list", "watch") and plural != "secrets" \
                    and group != "rbac.authorization.k8s.io":
                return
        qualified = f"{plural}.{group}" if group else plural
        what = f'{qualified} "{name}"' if name else qualified
        where = f'in the namespace "{ns}"' if ns else "at the cluster scope"
        raise ApiError(403, _status(403, "Forbidden", (
            f'{what} is forbidden: User "{oid}" cannot {verb} resource "{plural}" in API group "{group}" {where}: '
            "User does not have access to the resource in Azure. Update role assignment to allow access."),
            {"name": name, "group": group, "kind": plural} if name else {"group": group, "kind": plural}))

    # -- registry -----------------------------------------------------------------------------------

    def _register(self, res: Resource) -> None:
        self._resources.setdefault((res.group, res.version), {})[res.plural] = res
        self._store.setdefault((res.group, res.plural), {})

    def _served(self, res: Resource) -> bool:
        return res.crd is None or (res.served_at and time.monotonic() >= res.served_at)

    def _gv_resources(self, group: str, version: str) -> list[Resource]:
        return [r for r in self._resources.get((group, version), {}).values() if self._served(r)]

    def _next_rv(self) -> str:
        self._rv += 1
        return str(self._rv)

    # -- HTTP entry point ---------------------------------------------------------------------------

    def handle(self, method: str, raw_path: str, headers, body: bytes, *, client_cert: bool = False):
        with self._lock:
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            if self.latency:
                time.sleep(self.latency)
            return self._handle(method, raw_path, headers, body, client_cert=client_cert)
        finally:
            with self._lock:
                self.in_flight -= 1

    def _handle(self, method: str, raw_path: str, headers, body: bytes, *, client_cert: bool = False):
        parts = urlsplit(raw_path)
        path = unquote(parts.path)
        query = {k: v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
        extra: list[tuple[str, str]] = []
        try:
            auth = headers.get("Authorization", "")
            if self.entra_audience is not None:
                self._entra_authorize(method, path, query, auth, client_cert)
            elif auth == f"Bearer {self.readonly_token}":
                if method not in ("GET", "HEAD"):
                    verb = {"POST": "create", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}.get(method, method.lower())
                    raise ApiError(403, _status(403, "Forbidden", f'{path} is forbidden: User "reader" cannot {verb} this resource'))
            elif auth not in (f"Bearer {self.token}", self._basic_header()) and not (client_cert and not auth):
                raise ApiError(401, _status(401, "Unauthorized", "Unauthorized"))
            code, payload = self._route(method, path, query, headers, body, extra)
            ctype = "application/json"
        except ApiError as e:
            code, payload, ctype = e.code, e.body, e.content_type
        except Exception as e:  # noqa: BLE001 - a test server answers 500 instead of dropping the socket
            code, payload, ctype = 500, _status(500, "InternalError", f"test server error: {e!r}"), "application/json"
        with self._lock:
            self.request_log.append(LoggedRequest(method, path, code))
            self.request_queries.append(query)
        return code, payload, ctype, extra

    def _route(self, method, path, query, headers, body, extra):
        segs = [s for s in path.split("/") if s]
        if method == "GET":
            if path == "/version":
                return 200, {"major": "1", "minor": "36", "emulationMajor": "1", "emulationMinor": "36",
                             "minCompatibilityMajor": "1", "minCompatibilityMinor": "35",
                             "gitVersion": "v1.36.2", "gitCommit": "0" * 40, "gitTreeState": "clean",
                             "buildDate": "2026-01-01T00:00:00Z", "goVersion": "go1.27.3", "compiler": "gc",
                             "platform": "linux/amd64"}
            if path in ("/healthz", "/readyz", "/livez"):
                raise ApiError(200, "ok", "text/plain; charset=utf-8")
            if segs == ["api"]:
                return 200, {"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": [
                    {"clientCIDR": "0.0.0.0/0", "serverAddress": self.url.split("://", 1)[1]}]}
            if segs == ["apis"]:
                with self._lock:
                    return 200, {"kind": "APIGroupList", "apiVersion": "v1", "groups": self._groups()}
            if len(segs) == 2 and segs[0] == "apis":
                with self._lock:
                    for g in self._groups():
                        if g["name"] == segs[1]:
                            return 200, {"kind": "APIGroup", "apiVersion": "v1", **g}
                raise _page_not_found()
            if segs == ["api", "v1"]:
                with self._lock:
                    return 200, {"kind": "APIResourceList", "groupVersion": "v1",
                                 "resources": self._resource_list("", "v1")}
            if len(segs) == 3 and segs[0] == "apis":
                with self._lock:
                    resources = self._gv_resources(segs[1], segs[2])
                    if not resources:
                        raise _page_not_found()
                    return 200, {"kind": "APIResourceList", "apiVersion": "v1",
                                 "groupVersion": f"{segs[1]}/{segs[2]}",
                                 "resources": self._resource_list(segs[1], segs[2])}
        if segs[:2] == ["api", "v1"]:
            group, version, rest = "", "v1", segs[2:]
        elif len(segs) >= 3 and segs[0] == "apis":
            group, version, rest = segs[1], segs[2], segs[3:]
        else:
            raise _page_not_found()
        with self._lock:
            gv = self._resources.get((group, version), {})
            ns = None
            if len(rest) >= 3 and rest[0] == "namespaces" and rest[2] in gv and gv[rest[2]].namespaced:
                ns, rest = rest[1], rest[2:]
            if not rest or rest[0] not in gv or not self._served(gv[rest[0]]) or len(rest) > 3:
                raise _page_not_found()
            res = gv[rest[0]]
            name = rest[1] if len(rest) > 1 else None
            sub = rest[2] if len(rest) > 2 else None
        if sub is not None and sub != "status" or (sub == "status" and not res.status_subresource):
            raise _page_not_found()
        if res.namespaced and ns is None and name is not None:
            raise _page_not_found()
        return self._resource_request(method, res, ns if res.namespaced else None, name, sub, query, headers,
                                      body, extra)

    def _groups(self) -> list[dict]:
        def group_entry(name: str, versions: list[str]) -> dict:
            vs = [{"groupVersion": f"{name}/{v}", "version": v} for v in versions]
            return {"name": name, "versions": vs, "preferredVersion": vs[0]}

        out = [group_entry(g, ["v1"]) for g in _BUILTIN_GROUP_ORDER]
        custom: dict[str, set] = {}
        for (group, version), resources in self._resources.items():
            if group in _BUILTIN_GROUP_ORDER or not group:
                continue
            if any(self._served(r) for r in resources.values()):
                custom.setdefault(group, set()).add(version)
        for g in sorted(custom):
            out.append(group_entry(g, sorted(custom[g], key=_version_priority)))
        return out

    def _resource_list(self, group: str, version: str) -> list[dict]:
        out: list[dict] = []
        for res in sorted(self._gv_resources(group, version), key=lambda r: r.plural):
            entries = res.discovery()
            if res.crd:
                # custom kinds list the verbs in the apiextensions order (05b)
                entries[0]["verbs"] = list(CR_VERBS)
            out.extend(entries)
        return out

    # -- resource requests ------------------------------------------------------------------------

    def _resource_request(self, method, res: Resource, ns, name, sub, query, headers, body, extra):
        dry = query.get("dryRun")
        if dry not in (None, "All"):
            raise _bad_request(f'Invalid value: "{dry}": supported values: "All"')
        dry_run = dry == "All"
        if method == "GET":
            if query.get("watch") in ("true", "1"):
                raise ApiError(405, _status(405, "MethodNotAllowed", "watch is not supported by the test server"))
            if name is None:
                return 200, self._list(res, ns, query)
            with self._lock:
                obj = self._store[(res.group, res.plural)].get((ns or "", name))
                if obj is None:
                    raise _not_found(res, name)
                return 200, self._render(res, self._read_form(res, obj))
        if method == "DELETE":
            if name is None:
                raise ApiError(405, _status(405, "MethodNotAllowed", "deletecollection is not supported"))
            return 200, self._delete(res, ns, name, dry_run)
        content_type = (headers.get("Content-Type") or "application/json").split(";")[0].strip().lower()
        manager_default = (headers.get("User-Agent") or "unknown").split("/")[0]
        manager = query.get("fieldManager") or manager_default
        try:
            if content_type == "application/apply-patch+yaml":
                doc = self._parse_apply(body)
            else:
                doc = json.loads(body or b"null")
        except (ValueError, yaml.YAMLError) as e:
            raise _bad_request(f"error decoding request body: {e}")
        if method == "POST":
            if name is not None:
                raise ApiError(405, _status(405, "MethodNotAllowed", "the server does not allow this method"))
            return self._create(res, ns, doc, manager, dry_run, extra)
        if name is None:
            raise ApiError(405, _status(405, "MethodNotAllowed", "the server does not allow this method"))
        if method == "PUT":
            return self._update(res, ns, name, sub, doc, manager, dry_run, extra)
        if method == "PATCH":
            if content_type == "application/apply-patch+yaml":
                if not query.get("fieldManager"):
                    raise ApiError(422, _status(
                        422, "Invalid",
                        'PatchOptions.meta.k8s.io "" is invalid: fieldManager: Required value: is required for '
                        "apply patch",
                        {"group": "meta.k8s.io", "kind": "PatchOptions", "causes": [
                            _cause("FieldValueRequired", "Required value: is required for apply patch",
                                   "fieldManager")]}))
                return self._apply(res, ns, name, sub, doc, query["fieldManager"], query.get("force") == "true",
                                   dry_run)
            if content_type in ("application/merge-patch+json", "application/strategic-merge-patch+json",
                                "application/json-patch+json"):
                return self._patch(res, ns, name, sub, doc, content_type, manager, dry_run, extra)
            raise ApiError(415, _status(415, "UnsupportedMediaType",
                                        f'the body of the request was in an unknown format - accepted media types '
                                        f'include: application/json-patch+json, application/merge-patch+json, '
                                        f'application/apply-patch+yaml'))
        raise ApiError(405, _status(405, "MethodNotAllowed", "the server does not allow this method"))

    @staticmethod
    def _parse_apply(body: bytes) -> Any:
        try:
            return json.loads(body)
        except ValueError:
            return yaml.load(body, Loader=_YamlLoader)

    def _list(self, res: Resource, ns: str | None, query: dict) -> dict:
        selector = query.get("labelSelector", "")
        field_sel = query.get("fieldSelector", "")
        with self._lock:
            items = []
            for (ons, oname), obj in sorted(self._store[(res.group, res.plural)].items()):
                if ns is not None and ons != ns:
                    continue
                if not _match_labels(obj.get("metadata", {}).get("labels") or {}, selector):
                    continue
                if not _match_fields(obj, field_sel):
                    continue
                rendered = self._render(res, self._read_form(res, obj))
                if not res.crd:  # built-in list items carry no kind/apiVersion (11)
                    rendered.pop("kind", None)
                    rendered.pop("apiVersion", None)
                items.append(rendered)
            return {"kind": res.list_kind, "apiVersion": res.api_version,
                    "metadata": {"resourceVersion": str(self._rv)}, "items": items}

    # -- namespaces -------------------------------------------------------------------------------

    def _require_namespace(self, ns: str) -> None:
        """NamespaceLifecycle admission: a missing namespace is looked up again after a short wait (10c)."""
        with self._lock:
            if ("", ns) in self._store[("", "namespaces")]:
                return
        if self.missing_namespace_wait:
            time.sleep(self.missing_namespace_wait)
        with self._lock:
            if ("", ns) in self._store[("", "namespaces")]:
                return
        ns_res = self._resources[("", "v1")]["namespaces"]
        raise _not_found(ns_res, ns)

    # -- writes -----------------------------------------------------------------------------------

    def _check_identity(self, res: Resource, doc: Any, name: str | None, ns: str | None) -> None:
        if not isinstance(doc, dict):
            raise _bad_request("the body of the request was not a JSON or YAML object")
        api_version = doc.get("apiVersion")
        if api_version and api_version != res.api_version:
            raise _bad_request(f"the API version in the data ({api_version}) does not match the expected API "
                               f"version ({res.api_version})")
        kind = doc.get("kind")
        if kind and kind != res.kind:
            raise _bad_request(f"the kind in the data ({kind}) does not match the expected kind ({res.kind})")
        meta = doc.get("metadata") or {}
        if not isinstance(meta, dict):
            raise _bad_request("metadata must be an object")
        if name is not None and meta.get("name") and meta["name"] != name:
            raise _bad_request(f"the name of the object ({meta['name']}) does not match the name on the URL ({name})")
        if res.namespaced and ns is not None and meta.get("namespace") and meta["namespace"] != ns:
            raise _bad_request(f"the namespace of the provided object does not match the namespace sent on the "
                               f"request")

    def _skeleton(self, res: Resource, ns: str | None, name: str) -> dict:
        meta: dict[str, Any] = {"name": name}
        if res.namespaced:
            meta["namespace"] = ns
        return {"apiVersion": res.api_version, "kind": res.kind, "metadata": meta}

    def _scoped(self, res: Resource, obj: dict, sub: str | None) -> dict:
        """The part of an object whose fields are owned by managers of the main resource or of /status."""
        if sub == "status":
            return {"status": obj["status"]} if "status" in obj else {}
        out = {k: v for k, v in obj.items() if k not in ("apiVersion", "kind")}
        if res.status_subresource:
            out.pop("status", None)
        meta = {k: v for k, v in (obj.get("metadata") or {}).items()
                if k not in _SERVER_META and k not in ("name", "namespace")}
        if meta:
            out["metadata"] = meta
        else:
            out.pop("metadata", None)
        return out

    def _entries(self, obj: dict | None) -> list[dict]:
        return [dict(e, _set=_from_fieldsv1(e.get("fieldsV1") or {}))
                for e in ((obj or {}).get("metadata", {}).get("managedFields") or [])]

    def _update_managed(self, res: Resource, old: dict | None, new: dict, manager: str, sub: str | None,
                        api_version: str | None = None) -> list[dict]:
        """managedFields after an Update (POST, PUT, merge patch): the writer takes every field it set or
        changed, away from other managers; removed fields leave every set."""
        old_scoped = self._scoped(res, old, sub) if old else {}
        new_scoped = self._scoped(res, new, sub)
        changed = _changed_paths(old_scoped, new_scoped)
        removed = _removed_paths(old_scoped, new_scoped)
        entries = self._entries(old)
        mine = None
        for e in entries:
            if e["manager"] == manager and e["operation"] == "Update" and e.get("subresource") == sub:
                mine = e
                continue
            e["_set"] = {p for p in e["_set"] if p not in changed and not any(p[:len(r)] == r for r in removed)}
        if mine is None and changed:
            mine = {"manager": manager, "operation": "Update", "apiVersion": api_version or res.api_version,
                    "_set": set()}
            if sub:
                mine["subresource"] = sub
            entries.append(mine)
        if mine is not None:
            mine["_set"] = {p for p in mine["_set"] if not any(p[:len(r)] == r for r in removed)} | changed
            mine["_touched"] = bool(changed)  # the time moves only when this write set something
        return entries

    def _finalize(self, res: Resource, old: dict | None, new: dict, sub: str | None, *, apply: bool,
                  warnings: list) -> None:
        """Type-specific server behaviour on every write: defaults, status handling, validation."""
        meta = new.setdefault("metadata", {})
        name = meta.get("name")
        if old is not None:
            for k in ("uid", "creationTimestamp", "generation", "resourceVersion"):
                if k in old["metadata"]:
                    meta[k] = old["metadata"][k]
                else:
                    meta.pop(k, None)
        else:
            for k in _SERVER_META:
                meta.pop(k, None)
        # status: kept from the stored object on main-resource writes, only status on /status writes
        if sub == "status":
            status = new.get("status")
            new.clear()
            new.update(copy.deepcopy(old))
            meta = new["metadata"]
            if status is None:
                new.pop("status", None)
            else:
                new["status"] = status
        elif res.status_subresource and res.kind != "Namespace":
            if old is not None and "status" in old:
                new["status"] = copy.deepcopy(old["status"])
            else:
                new.pop("status", None)
        for k in ("labels", "annotations"):
            if k in meta:
                if meta[k] is None:
                    del meta[k]
                elif not isinstance(meta[k], dict) or not all(isinstance(v, str) for v in meta[k].values()):
                    raise _invalid(res, name, [_cause("FieldValueInvalid", "Invalid value: must be a map of strings",
                                                      f"metadata.{k}")])
        kind = res.kind
        if res.crd:
            schema = res.schema or {}
            if not apply:
                pruned = _prune_root(schema, new)
                warnings.extend(f'unknown field "{p}"' for p in pruned)
            _default_root(schema, new)
            if sub != "status" and res.status_subresource and old is None:
                new.pop("status", None)  # status is reset on create (06b)
            causes = _validate_root(schema, new)
            if causes:
                if res.has_cel and any(c["reason"] in _BLOCKING for c in causes):
                    causes.append(_cause("FieldValueInvalid",
                                         "Invalid value: null: some validation rules were not checked because the "
                                         "object was invalid; correct the existing errors to complete validation",
                                         "<nil>"))
                raise _invalid(res, name, causes)
        elif kind == "Secret":
            sd = new.pop("stringData", None)
            if sd:
                data = new.setdefault("data", {}) or {}
                new["data"] = data
                for k, v in sd.items():
                    if not isinstance(v, str):
                        raise _invalid(res, name, [_cause("FieldValueTypeInvalid", "Invalid value: must be a string",
                                                          f"stringData[{k}]")])
                    data[k] = base64.b64encode(v.encode()).decode()
            for k, v in (new.get("data") or {}).items():
                try:
                    base64.b64decode(v, validate=True)
                except (ValueError, TypeError):
                    raise _invalid(res, name, [_cause("FieldValueInvalid", "Invalid value: illegal base64 data",
                                                      f"data[{k}]")]) from None
            if new.get("data") == {}:
                new.pop("data")
            new.setdefault("type", "Opaque")
            if old is not None and old.get("type") != new["type"]:
                raise _invalid(res, name, [_cause("FieldValueInvalid", f'Invalid value: "{new["type"]}": field is '
                                                                       f"immutable", "type")])
        elif kind == "Namespace":
            meta.setdefault("labels", {})["kubernetes.io/metadata.name"] = name
            spec = new.setdefault("spec", {})
            if "finalizers" not in spec:
                spec["finalizers"] = (old or {}).get("spec", {}).get("finalizers", ["kubernetes"])
            if old is None:
                new["status"] = {"phase": "Active"}
            elif sub != "status":
                new["status"] = copy.deepcopy(old.get("status") or {"phase": "Active"})
        elif kind == "Service":
            spec = new.setdefault("spec", {})
            ospec = (old or {}).get("spec", {})
            spec.setdefault("type", "ClusterIP")
            if spec["type"] != "ExternalName":
                if "clusterIP" not in spec:
                    spec["clusterIP"] = ospec.get("clusterIP") or f"10.96.{random.randint(1, 254)}.{random.randint(1, 254)}"
                spec.setdefault("clusterIPs", ospec.get("clusterIPs") or [spec["clusterIP"]])
                spec.setdefault("ipFamilies", ["IPv4"])
                spec.setdefault("ipFamilyPolicy", "SingleStack")
                spec.setdefault("internalTrafficPolicy", "Cluster")
            spec.setdefault("sessionAffinity", "None")
            for port in spec.get("ports") or []:
                if isinstance(port, dict):
                    port.setdefault("protocol", "TCP")
                    port.setdefault("targetPort", port.get("port"))
            if old is None:
                new["status"] = {"loadBalancer": {}}
        elif kind == "Deployment":
            spec = new.setdefault("spec", {})
            spec.setdefault("replicas", 1)
            spec.setdefault("revisionHistoryLimit", 10)
            spec.setdefault("progressDeadlineSeconds", 600)
            strategy = spec.setdefault("strategy", {"type": "RollingUpdate"})
            if strategy.get("type", "RollingUpdate") == "RollingUpdate":
                strategy.setdefault("type", "RollingUpdate")
                strategy.setdefault("rollingUpdate", {"maxUnavailable": "25%", "maxSurge": "25%"})
            if old is None:
                new["status"] = {}
        elif kind == "CustomResourceDefinition":
            self._check_crd(res, new)
            if old is None:
                storage = [v["name"] for v in new["spec"]["versions"] if v.get("storage")]
                new["status"] = {"conditions": None, "acceptedNames": {"plural": "", "kind": ""},
                                 "storedVersions": storage}
        if old is None and name and (res.kind == "Namespace" and not _DNS1123_LABEL.match(name) or
                                     res.group != "rbac.authorization.k8s.io" and res.kind != "Namespace"
                                     and not (len(name) <= 253 and _DNS1123_SUBDOMAIN.match(name))):
            what = "RFC 1123 label" if res.kind == "Namespace" else "RFC 1123 subdomain"
            raise _invalid(res, name, [_cause(
                "FieldValueInvalid",
                f'Invalid value: "{name}": a lowercase {what} must consist of lower case alphanumeric characters, '
                f"'-' or '.', and must start and end with an alphanumeric character", "metadata.name")])
        # generation: 1 on create, +1 when anything but metadata and status changes
        if res.generation:
            if old is None:
                meta["generation"] = 1
            else:
                strip = ("metadata", "status", "apiVersion", "kind")
                before = {k: v for k, v in old.items() if k not in strip}
                after = {k: v for k, v in new.items() if k not in strip}
                meta["generation"] = old["metadata"].get("generation", 1) + (1 if before != after else 0)

    def _check_crd(self, res: Resource, crd: dict) -> None:
        name = crd["metadata"].get("name", "")
        spec = crd.get("spec") or {}
        causes = []
        group, names = spec.get("group"), spec.get("names") or {}
        if not group:
            causes.append(_cause("FieldValueRequired", "Required value", "spec.group"))
        if not names.get("plural"):
            causes.append(_cause("FieldValueRequired", "Required value", "spec.names.plural"))
        if not names.get("kind"):
            causes.append(_cause("FieldValueRequired", "Required value", "spec.names.kind"))
        if spec.get("scope") not in ("Namespaced", "Cluster"):
            causes.append(_cause("FieldValueNotSupported", f'Unsupported value: "{spec.get("scope")}": supported '
                                                           f'values: "Cluster", "Namespaced"', "spec.scope"))
        versions = spec.get("versions") or []
        if not versions:
            causes.append(_cause("FieldValueRequired", "Required value: must have exactly one version marked as "
                                                       "storage version", "spec.versions"))
        elif sum(1 for v in versions if v.get("storage")) != 1:
            causes.append(_cause("FieldValueInvalid", "Invalid value: must have exactly one version marked as storage "
                                                      "version", "spec.versions"))
        if group and names.get("plural") and name != f"{names['plural']}.{group}":
            causes.append(_cause("FieldValueInvalid", f'Invalid value: "{name}": must be spec.names.plural+"."+'
                                                      f"spec.group", "metadata.name"))
        if causes:
            raise _invalid(res, name, causes)

    def _commit(self, res: Resource, key: tuple, old: dict | None, new: dict, entries: list[dict],
                manager: str, operation: str, sub: str | None, *, dry: bool) -> dict:
        """Store ``new`` unless nothing changed (then the stored object is returned as is: same
        resourceVersion and managedFields times, as 03)."""
        now = _now()
        managed = []
        for e in entries:
            if not e["_set"]:
                continue
            touched = e.pop("_touched", False)
            fs = e.pop("_set")
            out = {k: v for k, v in e.items() if not k.startswith("_")}
            out["fieldsV1"] = _to_fieldsv1(fs)
            out["fieldsType"] = "FieldsV1"
            if touched or "time" not in out:
                out["time"] = now
            managed.append(out)
        meta = new["metadata"]
        meta["managedFields"] = managed
        if old is not None:
            def strip(o: dict) -> dict:
                c = dict(o)
                m = dict(c["metadata"])
                m.pop("resourceVersion", None)
                m["managedFields"] = [{k: v for k, v in e.items() if k != "time"} for e in m.get("managedFields", [])]
                c["metadata"] = m
                return c
            if strip(old) == strip(new):
                # no-op: no write; keep the stored times too
                return self._render(res, self._read_form(res, old))
        else:
            meta["uid"] = str(uuid.uuid4())
            meta["creationTimestamp"] = now
        if dry:
            if old is None:
                meta.pop("resourceVersion", None)
            return self._render(res, self._read_form(res, new))
        meta["resourceVersion"] = self._next_rv()
        self._store[(res.group, res.plural)][key] = new
        if res.kind == "CustomResourceDefinition":
            self._crd_written(old, new)
        return self._render(res, self._read_form(res, new))

    def _create(self, res: Resource, ns: str | None, doc: Any, manager: str, dry: bool, extra: list):
        self._check_identity(res, doc, None, ns)
        meta = doc.setdefault("metadata", {})
        if not meta.get("name"):
            if meta.get("generateName"):
                meta["name"] = meta["generateName"] + "".join(random.choices(string.ascii_lowercase + string.digits,
                                                                             k=5))
            else:
                raise _invalid(res, "", [_cause("FieldValueRequired", "Required value: name or generateName is "
                                                                      "required", "metadata.name")])
        name = meta["name"]
        if res.namespaced:
            ns = ns or meta.get("namespace")
            if not ns:
                raise _bad_request("the namespace of the object must be set")
            self._require_namespace(ns)
        with self._lock:
            key = (ns or "", name)
            new = copy.deepcopy(doc)
            new.update({"apiVersion": res.api_version, "kind": res.kind})
            new["metadata"]["name"] = name
            if res.namespaced:
                new["metadata"]["namespace"] = ns
            else:
                new["metadata"].pop("namespace", None)
            warnings: list = []
            self._finalize(res, None, new, None, apply=False, warnings=warnings)
            if key in self._store[(res.group, res.plural)]:
                raise ApiError(409, _status(409, "AlreadyExists", f'{res.qualified} "{name}" already exists',
                                            _details(res, name)))
            entries = self._update_managed(res, None, new, manager, None)
            out = self._commit(res, key, None, new, entries, manager, "Update", None, dry=dry)
        extra.extend(("Warning", f'299 - "{w}"') for w in warnings)
        return 201, out

    def _update(self, res: Resource, ns: str | None, name: str, sub: str | None, doc: Any, manager: str, dry: bool,
                extra: list, *, check_rv: bool = True):
        self._check_identity(res, doc, name, ns)
        with self._lock:
            key = (ns or "", name)
            old = self._store[(res.group, res.plural)].get(key)
            if old is None:
                raise _not_found(res, name)
            rv = (doc.get("metadata") or {}).get("resourceVersion")
            if check_rv:
                if not rv:
                    raise _invalid(res, name, [_cause("FieldValueInvalid", "Invalid value: 0x0: must be specified "
                                                                           "for an update",
                                                      "metadata.resourceVersion")])
                if rv != old["metadata"]["resourceVersion"]:
                    raise ApiError(409, _status(
                        409, "Conflict", f'Operation cannot be fulfilled on {res.qualified} "{name}": the object has '
                                         f"been modified; please apply your changes to the latest version and try "
                                         f"again", _details(res, name)))
            new = copy.deepcopy(doc)
            new.update({"apiVersion": res.api_version, "kind": res.kind})
            new.setdefault("metadata", {})["name"] = name
            if res.namespaced:
                new["metadata"]["namespace"] = ns
            warnings: list = []
            self._finalize(res, old, new, sub, apply=False, warnings=warnings)
            entries = self._update_managed(res, old, new, manager, sub)
            out = self._commit(res, key, old, new, entries, manager, "Update", sub, dry=dry)
        extra.extend(("Warning", f'299 - "{w}"') for w in warnings)
        return 200, out

    def _patch(self, res: Resource, ns, name, sub, patch, content_type, manager, dry, extra):
        with self._lock:
            old = self._store[(res.group, res.plural)].get((ns or "", name))
            if old is None:
                raise _not_found(res, name)
            current = self._read_form(res, old)
            if content_type == "application/json-patch+json":
                if not isinstance(patch, list):
                    raise _bad_request("json patch must be a list of operations")
                doc = _json_patch(current, patch)
            else:
                if not isinstance(patch, dict):
                    raise _bad_request("merge patch must be an object")
                doc = _json_merge_patch(current, patch)
            doc.setdefault("metadata", {})["resourceVersion"] = old["metadata"]["resourceVersion"]
            return self._update(res, ns, name, sub, doc, manager, dry, extra, check_rv=False)

    def _apply(self, res: Resource, ns: str | None, name: str, sub: str | None, cfg: Any, manager: str,
               force: bool, dry: bool):
        """Server-side apply (``application/apply-patch+yaml``)."""
        self._check_identity(res, cfg, name, ns)
        if not cfg.get("apiVersion") or not cfg.get("kind"):
            raise _bad_request("apiVersion and kind must be set in an apply patch")
        where = f"{ns}/{name}" if ns else name
        gvk = f"{res.api_version if res.group else '/' + res.version}, Kind={res.kind}"
        if res.crd:
            err = _root_typed_error(res.schema or {}, cfg)
            if err:
                raise ApiError(500, _status(500, None, f"failed to create typed patch object ({where}; {gvk}): {err}"))
        else:
            err = _builtin_typed_error(res, cfg)
            if err:
                raise ApiError(500, _status(500, None, f"failed to create typed patch object ({where}; {gvk}): {err}"))
        with self._lock:
            old = self._store[(res.group, res.plural)].get((ns or "", name))
        if old is None:
            if sub:
                raise _not_found(res, name)
            if res.namespaced:
                self._require_namespace(ns)
        with self._lock:
            key = (ns or "", name)
            old = self._store[(res.group, res.plural)].get(key)
            live = self._read_form(res, old) if old else self._skeleton(res, ns, name)
            applied = self._scoped(res, cfg, sub)
            applied_paths = _leaf_paths(applied)
            entries = self._entries(old)
            mine = None
            conflicts: list[tuple[dict, tuple]] = []
            for e in entries:
                if e["manager"] == manager and e["operation"] == "Apply" and e.get("subresource") == sub:
                    mine = e
                    continue
                if e["manager"] == manager:
                    continue
                for p in sorted(e["_set"] & applied_paths):
                    if _get_path(applied, p) != _get_path(live, p):
                        conflicts.append((e, p))
            if conflicts and not force:
                def dotted(p: tuple) -> str:
                    return "".join("." + el[2:] for el in p)
                causes = [_cause("FieldManagerConflict", f'conflict with "{e["manager"]}"', dotted(p))
                          for e, p in conflicts]
                if len(conflicts) == 1:
                    e, p = conflicts[0]
                    msg = f'Apply failed with 1 conflict: conflict with "{e["manager"]}": {dotted(p)}'
                else:
                    msg = f"Apply failed with {len(conflicts)} conflicts: " + "\n".join(
                        f'conflict with "{e["manager"]}": {dotted(p)}' for e, p in conflicts)
                raise ApiError(409, _status(409, "Conflict", msg, {"causes": causes}))
            for e, p in conflicts:
                e["_set"].discard(p)
                e["_touched"] = False
            new = copy.deepcopy(live)
            owned_by_others = set().union(*(e["_set"] for e in entries if e is not mine)) if entries else set()
            for p in (mine["_set"] if mine else set()) - applied_paths:
                if p not in owned_by_others and not any(p[:len(q)] == q for q in applied_paths):
                    _delete_path(new, p)
            _deep_merge(new, applied)
            self._finalize(res, old, new, sub, apply=True, warnings=[])
            if mine is None:
                mine = {"manager": manager, "operation": "Apply", "apiVersion": cfg.get("apiVersion"), "_set": set()}
                if sub:
                    mine["subresource"] = sub
                entries.append(mine)
            # as the apiserver's managedFieldsUpdater: the applier's time moves only when the merge changed
            # the object as decoded (so 06b keeps it although the stored bytes change)
            mine["_touched"] = old is None or _content(new) != _content(live)
            mine["_set"] = applied_paths
            mine["apiVersion"] = cfg.get("apiVersion")
            out = self._commit(res, key, old, new, entries, manager, "Apply", sub, dry=dry)
            return (201 if old is None else 200), out

    def _delete(self, res: Resource, ns: str | None, name: str, dry: bool) -> dict:
        with self._lock:
            key = (ns or "", name)
            store = self._store[(res.group, res.plural)]
            obj = store.get(key)
            if obj is None:
                raise _not_found(res, name)
            out = self._render(res, self._read_form(res, obj))
            if dry:
                return out
            del store[key]
            self._next_rv()
            if res.kind == "Namespace":
                for (group, plural), objs in self._store.items():
                    for k in [k for k in objs if k[0] == name]:
                        del objs[k]
            if res.kind == "CustomResourceDefinition":
                spec = obj.get("spec") or {}
                for v in spec.get("versions") or []:
                    self._resources.get((spec.get("group"), v["name"]), {}).pop(spec["names"]["plural"], None)
                self._store.pop((spec.get("group"), spec["names"]["plural"]), None)
            return out

    # -- CRDs -------------------------------------------------------------------------------------

    def _crd_written(self, old: dict | None, crd: dict) -> None:
        spec = crd["spec"]
        group, names = spec["group"], spec["names"]
        established = any(c.get("type") == "Established" and c.get("status") == "True"
                          for c in (crd.get("status") or {}).get("conditions") or [])
        for v in spec["versions"]:
            gv = self._resources.setdefault((group, v["name"]), {})
            existing = gv.get(names["plural"])
            schema = ((v.get("schema") or {}).get("openAPIV3Schema")) or {"type": "object",
                                                                           "x-kubernetes-preserve-unknown-fields": True}
            subs = v.get("subresources") or {}
            res = Resource(group, v["name"], names["plural"], names.get("singular") or names["kind"].lower(),
                           names["kind"], spec["scope"] == "Namespaced", verbs=list(CR_VERBS),
                           short_names=list(names.get("shortNames") or []),
                           categories=list(names.get("categories") or []),
                           subresources=([{"name": "scale", "group": "autoscaling", "version": "v1", "kind": "Scale",
                                           "verbs": SUB_VERBS}] if "scale" in subs else [])
                                        + ([{"name": "status"}] if "status" in subs else []),
                           status_subresource="status" in subs, generation=True, crd=crd["metadata"]["name"],
                           schema=schema, has_cel=_has_cel(schema),
                           served_at=existing.served_at if existing else 0.0)
            if not v.get("served", True):
                res.served_at = 0.0
            subs_sorted = sorted(res.subresources, key=lambda s: s["name"])
            res.subresources = subs_sorted
            gv[names["plural"]] = res
            self._store.setdefault((group, names["plural"]), {})
        if old is None and not established:
            uid = crd["metadata"]["uid"]
            for delay, final in ((self.crd_establish_delay * 0.5, False), (self.crd_establish_delay, True)):
                t = threading.Timer(delay, self._establish, args=(crd["metadata"]["name"], uid, final))
                t.daemon = True
                self._timers.append(t)
                t.start()

    def _establish(self, crd_name: str, uid: str, final: bool) -> None:
        """What the apiextensions naming and establishing controllers do (04b)."""
        with self._lock:
            res = self._resources[("apiextensions.k8s.io", "v1")]["customresourcedefinitions"]
            key = ("", crd_name)
            old = self._store[("apiextensions.k8s.io", "customresourcedefinitions")].get(key)
            if old is None or old["metadata"]["uid"] != uid:
                return
            if not final and _condition_true(old, "Established"):
                # The two timers can run out of order on a loaded machine; never step back.
                return
            new = copy.deepcopy(old)
            names = new["spec"]["names"]
            accepted = {"plural": names["plural"], "singular": names.get("singular") or names["kind"].lower()}
            if names.get("shortNames"):
                accepted["shortNames"] = names["shortNames"]
            accepted["kind"] = names["kind"]
            accepted["listKind"] = names.get("listKind") or names["kind"] + "List"
            if names.get("categories"):
                accepted["categories"] = names["categories"]
            now = _now()
            prev = {c["type"]: c for c in (new["status"].get("conditions") or [])}

            def cond(ctype: str, status: str, reason: str, message: str) -> dict:
                p = prev.get(ctype)
                ltt = p["lastTransitionTime"] if p and p["status"] == status else now
                return {"type": ctype, "status": status, "lastTransitionTime": ltt, "reason": reason,
                        "message": message}

            new["status"]["conditions"] = [
                cond("NamesAccepted", "True", "NoConflicts", "no conflicts found"),
                cond("Established", "True", "InitialNamesAccepted", "the initial names have been accepted") if final
                else cond("Established", "False", "Installing", "the initial names have been accepted"),
            ]
            new["status"]["acceptedNames"] = accepted
            entries = self._entries(old)
            mine = next((e for e in entries if e["manager"] == SERVER_MANAGER and e.get("subresource") == "status"),
                        None)
            fields = _from_fieldsv1({"f:status": {
                "f:acceptedNames": {f"f:{k}": {} for k in
                                    ("categories", "kind", "listKind", "plural", "shortNames", "singular")},
                "f:conditions": {f'k:{{"type":"{t}"}}': {".": {}, **{f"f:{k}": {} for k in (
                    "lastTransitionTime", "message", "reason", "status", "type")}}
                    for t in ("Established", "NamesAccepted")}}})
            if mine is None:
                mine = {"manager": SERVER_MANAGER, "operation": "Update", "apiVersion": "apiextensions.k8s.io/v1",
                        "subresource": "status", "_set": set()}
                entries.append(mine)
            mine["_touched"] = True
            mine["_set"] = fields
            self._commit(res, key, old, new, entries, SERVER_MANAGER, "Update", "status", dry=False)
            if final:
                spec = new["spec"]
                for v in spec["versions"]:
                    r = self._resources.get((spec["group"], v["name"]), {}).get(names["plural"])
                    if r is not None and v.get("served", True):
                        r.served_at = time.monotonic() + self.discovery_delay

    # -- reading and rendering --------------------------------------------------------------------

    def _read_form(self, res: Resource, obj: dict) -> dict:
        """The stored object as decoded for a response: CRD schema defaults are applied at read time too,
        which is why a freshly created custom object shows ``status.observedGeneration: -1`` (06)."""
        if res.crd and res.schema:
            obj = copy.deepcopy(obj)
            _default_root(res.schema, obj)
            return obj
        return obj

    def _render(self, res: Resource, obj: dict) -> dict:
        obj = copy.deepcopy(obj)
        if res.crd:
            return _sorted_keys(obj)
        meta = obj.get("metadata") or {}
        for k in ("labels", "annotations"):  # Go marshals map[string]string sorted by key
            if isinstance(meta.get(k), dict):
                meta[k] = dict(sorted(meta[k].items()))
        for k in ("data", "binaryData"):
            if isinstance(obj.get(k), dict):
                obj[k] = dict(sorted(obj[k].items()))
        ordered_meta = {k: meta[k] for k in _META_ORDER if k in meta}
        ordered_meta.update({k: v for k, v in meta.items() if k not in ordered_meta})
        if "managedFields" in ordered_meta:
            ordered_meta["managedFields"] = [
                {**{k: e[k] for k in _MF_ORDER if k in e}, **{k: v for k, v in e.items() if k not in _MF_ORDER}}
                for e in ordered_meta["managedFields"]]
        if res.kind == "CustomResourceDefinition":
            head = {"apiVersion": obj.get("apiVersion"), "kind": obj.get("kind"), "metadata": ordered_meta}
            order = ["spec", "status"]
            status = obj.get("status")
            if isinstance(status, dict):
                obj["status"] = {k: status[k] for k in ("conditions", "acceptedNames", "storedVersions") if k in status}
        else:
            head = {"kind": obj.get("kind"), "apiVersion": obj.get("apiVersion"), "metadata": ordered_meta}
            order = _KIND_KEY_ORDER.get(res.kind, ["spec", "status"])
        rest = {k: obj[k] for k in order if k in obj}
        rest.update({k: v for k, v in obj.items() if k not in head and k not in rest})
        return {**head, **rest}


def _content(obj: dict) -> dict:
    c = dict(obj)
    c["metadata"] = {k: v for k, v in (obj.get("metadata") or {}).items()
                     if k not in ("managedFields", "resourceVersion")}
    return c


def _sorted_keys(v: Any) -> Any:
    if isinstance(v, dict):
        return {k: _sorted_keys(v[k]) for k in sorted(v)}
    if isinstance(v, list):
        return [_sorted_keys(x) for x in v]
    return v


def _builtin_typed_error(res: Resource, cfg: dict) -> str | None:
    """The few typed checks of built-in kinds this server knows: string maps."""
    meta = cfg.get("metadata") or {}
    for k in ("labels", "annotations"):
        for key, v in (meta.get(k) or {}).items():
            if not isinstance(v, str):
                return f".metadata.{k}.{key}: expected string, got &value.valueUnstructured{{Value:{_go_repr(v)}}}"
    if res.kind in ("Secret", "ConfigMap"):
        for k in ("data", "stringData"):
            for key, v in (cfg.get(k) or {}).items():
                if not isinstance(v, str):
                    return f".{k}.{key}: expected string, got &value.valueUnstructured{{Value:{_go_repr(v)}}}"
    return None


def _match_labels(labels: dict, selector: str) -> bool:
    for term in [t.strip() for t in selector.split(",") if t.strip()]:
        if "!=" in term:
            k, v = term.split("!=", 1)
            if labels.get(k.strip()) == v.strip():
                return False
        elif "=" in term:
            k, v = term.replace("==", "=").split("=", 1)
            if labels.get(k.strip()) != v.strip():
                return False
        elif term.startswith("!"):
            if term[1:] in labels:
                return False
        elif term not in labels:
            return False
    return True


def _match_fields(obj: dict, selector: str) -> bool:
    for term in [t.strip() for t in selector.split(",") if t.strip()]:
        neg = "!=" in term
        k, v = term.replace("!=", "=").replace("==", "=").split("=", 1)
        cur: Any = obj
        for part in k.split("."):
            cur = cur.get(part) if isinstance(cur, dict) else None
        if (str(cur) == v) == neg:
            return False
    return True


# ---------------------------------------------------------------------------------------------------
# pytest fixtures


@pytest.fixture
def kube_server():
    """A started local Kubernetes API test server (fresh per test)."""
    server = KubeApiServer().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def local_kube_server(request):
    """The local test server, or None when TEST_KUBECONFIG names a real cluster (then skip only the
    assertions that need ``set_status``/``request_log``)."""
    if os.environ.get("TEST_KUBECONFIG"):
        return None
    return request.getfixturevalue("kube_server")


@pytest.fixture
def kubeconfig_text(request, local_kube_server):
    """Kubeconfig YAML text: the file named by TEST_KUBECONFIG, else the local test server's.

    A real cluster outlives the test, so there the ``flux-system`` Kustomization and GitRepository
    a previous test left are removed first (pruning off and finalizers dropped, so nothing they
    applied is garbage-collected): every test starts from a cluster that is not syncing yet. Name
    only a throwaway cluster."""
    path = os.environ.get("TEST_KUBECONFIG")
    if path:
        text = flatten_kubeconfig(path)
        reset_flux_sync(text)
        return text
    return local_kube_server.kubeconfig()


def flatten_kubeconfig(path: str) -> str:
    """The kubeconfig file at ``path`` with its file references inlined, as ``kubectl config view
    --flatten --raw`` does: what the CLI does with its ``--kubeconfig``
    (:func:`shared.ports.kube.flatten_local_files`), since the app refuses stored kubeconfigs that name
    local files. Relative paths are relative to the file's folder."""
    from shared.ports.kube import flatten_local_files

    with open(path, encoding="utf-8") as f:
        return flatten_local_files(f.read(), os.path.dirname(os.path.abspath(path)), field="TEST_KUBECONFIG")


def reset_flux_sync(kubeconfig: str, namespace: str = "flux-system") -> None:
    """Delete ``<namespace>/<namespace>`` Kustomization and GitRepository without cascading."""
    import yaml
    from kubernetes import client, config

    api_client = config.new_client_from_config_dict(yaml.safe_load(kubeconfig))
    try:
        api = client.CustomObjectsApi(api_client)
        for group, plural in (("kustomize.toolkit.fluxcd.io", "kustomizations"), ("source.toolkit.fluxcd.io", "gitrepositories")):
            try:
                if plural == "kustomizations":
                    api.patch_namespaced_custom_object(group, "v1", namespace, plural, namespace, {"spec": {"prune": False}})
                api.patch_namespaced_custom_object(group, "v1", namespace, plural, namespace, {"metadata": {"finalizers": None}})
                api.delete_namespaced_custom_object(group, "v1", namespace, plural, namespace)
            except client.ApiException as exc:
                if exc.status != 404:
                    raise
    finally:
        api_client.close()
