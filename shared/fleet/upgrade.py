"""Fleet upgrades: a new Flux version for registered clusters, in waves.

Flux upgrades itself from Git: for each cluster the upgrade renders ``gotk-components.yaml`` again at
the new version with the options the cluster was bootstrapped with (recorded in its registry record,
``install``), commits ``Add Flux vX.Y.Z component manifests`` and pushes it, which is what re-running
``flux bootstrap`` with ``--version`` does (fluxcd/flux2 docs "Flux upgrade", "bootstrap upgrade"):
kustomize-controller then applies the new components. So an upgrade runs the bootstrap drive
(:func:`shared.bootstrap.service.run`) with the record's options and the new version; the health check
waits for the GitRepository and the Kustomization to be Ready at the pushed revision and the component
Deployments to be available, and then for every component's Deployment to run the new controller
images (:func:`check_images`).

``POST /api/fleet/upgrade`` (:func:`plan_upgrade`): ``version`` (``vX.Y.Z`` or ``latest``, resolved
once), the clusters as registry names or globs, either ``clusters: [...]`` (one wave) or ``waves:
[["dev-*"], ["prod-*"]]`` (a cluster matched by several waves is in the first), ``timeout`` (Flux's,
default 5m), ``dryRun``. A wave starts only when every cluster of the previous one succeeded; a failed
wave skips the later ones. ``dryRun: true`` runs every cluster at once and writes nothing: each
cluster's result is its diff (:func:`diff`): the file (a unified diff of gotk-components.yaml in Git
against the new rendering) and the objects (added, removed, changed, with the images that change).
"""

from __future__ import annotations

import difflib
import fnmatch
import logging
import re
import time
from typing import Any

from shared import errors
from shared.errors import InvalidInput, shown

from .operations import Plan, _timeout
from .store import Item

log = logging.getLogger(__name__)

_PATTERN = re.compile(r"^[a-z0-9*?\[\]-]{1,63}$")
#: characters of a file diff kept in a dry run's result (the rest is counted, not kept: a table
#: property holds 32 K characters)
DIFF_CHARS = 12_000


def _patterns(body: dict) -> tuple[list[list[str]], str]:
    """The waves of patterns and the field they came from (``clusters`` or ``waves``)."""
    if ("clusters" in body) == ("waves" in body):
        raise InvalidInput("waves", "give either clusters (one wave) or waves (a list of lists of names or globs)")
    if "clusters" in body:
        waves, field = [body["clusters"]], "clusters"
    else:
        waves, field = body["waves"], "waves"
        if not isinstance(waves, list) or not waves:
            raise InvalidInput("waves", "must be a non-empty list of waves, each a list of cluster names or globs")
    for w, wave in enumerate(waves):
        where = field if field == "clusters" else f"waves[{w}]"
        if not isinstance(wave, list) or not wave:
            raise InvalidInput(where, "must be a non-empty list of cluster names or globs (dev-*)")
        for p, pattern in enumerate(wave):
            if not isinstance(pattern, str) or not _PATTERN.fullmatch(pattern):
                raise InvalidInput(f"{where}[{p}]", f"{shown(pattern)} is not a cluster name or glob (a-z, 0-9, '-', "
                                                    "'*', '?', '[...]')")
    return waves, field


#: ``install`` fields passed to the bootstrap request as they are (request spelling)
_PASSED = ("branch", "path", "interval", "components", "componentsExtra", "registry", "networkPolicy",
           "watchAllNamespaces", "logLevel", "clusterDomain", "authorName", "authorEmail", "commitMessageAppendix",
           "tolerationKeys", "imagePullSecret", "recurseSubmodules", "sparseCheckout", "caFileSecret",
           "registryCredsSecret", "workloadIdentity", "sops", "sshHostkeyAlgos", "sshHostname", "privateKeySecret")
#: Git auth modes an upgrade can push with: the PAT, the Function's Entra ID token (entra-bearer, and
#: workload-identity, where the app pushes with it too), or the cluster's SSH key (ssh)
UPGRADABLE = ("pat", "entra-bearer", "workload-identity", "ssh")


def _options_body(record, version: str) -> dict:
    """The bootstrap request that re-renders ``record``'s cluster at ``version`` (request spelling):
    the record's own fields, its recorded install options (:data:`shared.rotation.registry.INSTALL_FIELDS`;
    a field a record of an earlier release lacks is the bootstrap's default), and how it pushes:
    ``passwordSecret`` = ``patSecret`` (pat), ``withBearerToken`` (entra-bearer), ``sourceProvider:
    azure`` with the recorded ``workloadIdentity``/``sops`` (workload-identity), or over SSH the
    recorded key (``privateKeySecret``, else the generated ``flux-ssh-<name>`` the cluster name
    gives) and ``passwordSecret`` (its passphrase; with ``sshHostname``, ``url`` the https URL
    pushed to and ``passwordSecret`` its PAT)."""
    install = dict(record.install or {})
    body = {"url": record.git_url, "namespace": record.namespace, "secretName": record.source_secret,
            "username": record.username, "allowInsecureHttp": record.allow_insecure_http, "clusterName": record.name,
            "version": version}
    for key in _PASSED:
        if key in install:
            body[key] = install[key]
    if record.git_auth == "entra-bearer":
        body["withBearerToken"] = True
    elif record.git_auth == "workload-identity":
        body["sourceProvider"] = "azure"
    elif record.git_auth == "ssh":
        if install.get("url"):  # sshHostname: pushed over https, synced over SSH from gitUrl
            body["url"] = install["url"]
        if install.get("passwordSecret"):
            body["passwordSecret"] = install["passwordSecret"]
    else:
        body["passwordSecret"] = record.pat_secret
    if record.cluster_resource_id:
        body["clusterResourceId"] = record.cluster_resource_id
        if record.local_accounts:
            body["localAccounts"] = True
    else:
        body["kubeconfigSecret"] = record.kubeconfig_secret
        if record.context:
            body["context"] = record.context
    return body


def _check_record(record, where: str) -> None:
    if not record.install:
        raise InvalidInput(where, f"cluster {record.name!r} has no recorded install options (registered by hand, or "
                                  "bootstrapped before they were recorded): bootstrap it once with POST /api/bootstrap "
                                  "or /api/fleet/bootstrap")
    if record.git_auth not in UPGRADABLE or not record.git_url:
        raise InvalidInput(where, f"cluster {record.name!r} uses Git auth {record.git_auth!r}; an upgrade pushes with "
                                  "the PAT (pat), the Function's Entra ID token (entra-bearer, workload-identity) or the "
                                  "cluster's SSH key (ssh)")
    if record.git_auth == "workload-identity" and record.install.get("sourceProvider") != "azure":
        # a record of an earlier release: re-rendering without its workloadIdentity (which a record since
        # keeps next to sourceProvider) could drop the controllers' identity patches
        raise InvalidInput(where, f"cluster {record.name!r} was registered before its workload identity options were "
                                  "recorded: bootstrap it once again (POST /api/bootstrap with its sourceProvider and "
                                  "workloadIdentity), then upgrade it")
    if record.git_auth == "ssh" and "sshHostname" in record.install and not record.install.get("passwordSecret"):
        raise InvalidInput(where, f"cluster {record.name!r} syncs over SSH but was bootstrapped over https "
                                  "(sshHostname): its record names no PAT to push with (install.passwordSecret)")


def plan_upgrade(body: Any, *, registry=None) -> Plan:
    """Check a fleet upgrade request against the registry and return its :class:`Plan`; nothing is
    written. Raises ``InvalidInput`` naming the field (``version``, ``waves[1][0]`` for a glob that
    matches no registered cluster or a cluster that cannot be upgraded, ``dryRun``, ``timeout``)."""
    from shared import services
    from shared.bootstrap import options_from_request
    from shared.bootstrap.runner import prepare
    from shared.flux.options import validate_version

    if not isinstance(body, dict):
        raise InvalidInput("body", "must be a JSON object")
    unknown = sorted(set(body) - {"version", "clusters", "waves", "dryRun", "timeout"})
    if unknown:
        from shared.trust import safe_field_name

        raise InvalidInput(safe_field_name(unknown[0]), "unknown field (an upgrade takes version, clusters or waves, "
                                                        "dryRun, timeout)")
    version = body.get("version")
    if not isinstance(version, str) or not version:
        raise InvalidInput("version", "is required: the Flux release (vX.Y.Z) or latest")
    validate_version(version)
    dry_run = body.get("dryRun", False)
    if not isinstance(dry_run, bool):
        raise InvalidInput("dryRun", "must be true or false")
    timeout = _timeout(body)
    waves, field = _patterns(body)
    registry = registry or services.registry()
    records = {r.name: r for r in registry.list()}
    placed: dict[str, int] = {}
    members: list[list] = []
    for w, wave in enumerate(waves):
        chosen = []
        for p, pattern in enumerate(wave):
            where = f"clusters[{p}]" if field == "clusters" else f"waves[{w}][{p}]"
            names = sorted(n for n in records if fnmatch.fnmatchcase(n, pattern))
            if not names:
                raise InvalidInput(where, f"{pattern!r} matches no registered cluster")
            for name in names:
                if name in placed:
                    continue
                _check_record(records[name], where)
                try:  # the record's options must still make a valid request (and pass today's allowlists)
                    records[name].check_policy()
                    options_from_request(_options_body(records[name], version))
                except InvalidInput as exc:
                    raise InvalidInput(where, f"cluster {name!r}: {exc}") from None
                placed[name] = w
                chosen.append(records[name])
        members.append(chosen)
    first = next(r for wave in members for r in wave)
    opts, _ = options_from_request(_options_body(first, version))
    dist = prepare(opts)  # the release exists; latest → the release it is today, for every cluster
    if dry_run:  # nothing is written: every cluster at once
        members = [[r for wave in members for r in wave]]
    members = [wave for wave in members if wave]
    items, index = [], 0
    for w, wave in enumerate(members):
        for record in wave:
            items.append(Item(op_id="", index=index, name=record.name, wave=w, request={"cluster": record.name}))
            index += 1
    spec = {"version": dist.version, "requested": version, "timeoutSeconds": timeout, "dryRun": dry_run,
            "waves": [[r.name for r in wave] for wave in members]}
    return Plan("upgrade", spec, items, len(members))


# -- one cluster --------------------------------------------------------------------------------------


def _objects(text: str) -> dict[tuple, dict]:
    from shared.bootstrap.runner import load_objects

    out = {}
    for obj in load_objects(text):
        if isinstance(obj, dict):
            meta = obj.get("metadata") or {}
            out[(obj.get("kind"), meta.get("namespace"), meta.get("name"))] = obj
    return out


def _images(obj: dict) -> list[str]:
    spec = ((obj.get("spec") or {}).get("template") or {}).get("spec") or {}
    return [c.get("image") for c in (spec.get("containers") or []) if isinstance(c, dict) and c.get("image")]


def _leaves(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            out.update(_leaves(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    if isinstance(value, list):
        out = {}
        for i, v in enumerate(value):
            out.update(_leaves(v, f"{prefix}[{i}]"))
        return out
    return {prefix: value}


def diff(path: str, current: str | None, new: str) -> dict:
    """What an upgrade would change: ``{"file": {"path", "changed", "added", "removed", "diff"}, "objects":
    {"added": [...], "removed": [...], "changed": [{"object", "fields", "images"}], "unchanged": n}}``.
    ``current`` is the file in Git (None when absent); objects are ``Kind/namespace/name``; ``fields`` the
    changed leaf paths (first 20), ``images`` ``{"from", "to"}`` of a Deployment."""
    old_lines = (current or "").splitlines(keepends=True)
    new_lines = new.splitlines(keepends=True)
    lines = list(difflib.unified_diff(old_lines, new_lines, fromfile=f"a/{path}", tofile=f"b/{path}", n=1))
    text = "".join(lines)
    if len(text) > DIFF_CHARS:
        cut = text[:DIFF_CHARS].rsplit("\n", 1)[0] + "\n"
        text = cut + f"... {len(lines) - cut.count(chr(10))} more lines\n"
    old_objs, new_objs = (_objects(current) if current else {}), _objects(new)

    def name(key):
        kind, ns, n = key
        return f"{kind}/{ns}/{n}" if ns else f"{kind}/{n}"

    changed = []
    for key in new_objs.keys() & old_objs.keys():
        a, b = _leaves(old_objs[key]), _leaves(new_objs[key])
        fields = sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k))
        if fields:
            entry = {"object": name(key), "fields": fields[:20]}
            if key[0] == "Deployment" and _images(old_objs[key]) != _images(new_objs[key]):
                entry["images"] = {"from": _images(old_objs[key]), "to": _images(new_objs[key])}
            changed.append(entry)
    return {
        "file": {"path": path, "changed": current != new, "added": sum(1 for l in lines if l.startswith("+") and not l.startswith("+++")),
                 "removed": sum(1 for l in lines if l.startswith("-") and not l.startswith("---")), "diff": text},
        "objects": {"added": sorted(name(k) for k in new_objs.keys() - old_objs.keys()),
                    "removed": sorted(name(k) for k in old_objs.keys() - new_objs.keys()),
                    "changed": sorted(changed, key=lambda c: c["object"]),
                    "unchanged": len(new_objs.keys() & old_objs.keys()) - len(changed)},
    }


def dry_run(request, vault=None) -> dict:
    """Clone the cluster's branch, read its gotk-components.yaml and compare it with the new rendering
    (:func:`diff`). Reads the repository with the cluster's credential; writes nothing anywhere."""
    import posixpath
    import tempfile

    from shared import services
    from shared.bootstrap import service
    from shared.flux import install

    opts = request.opts
    vault = vault or services.keyvault()
    manifest = install.generate(request.dist, opts.install_options())
    cluster = None
    with tempfile.TemporaryDirectory(prefix="flux-upgrade-") as tmp:
        try:
            if opts.git_url.startswith("ssh://"):  # the host key must be the one the source Secret pins
                from shared.clusters import ROTATION, ClusterAccess

                cluster = ClusterAccess(keyvault=vault).connect(request.refs["cluster"], purpose=ROTATION,
                                                                namespace=opts.namespace)
            repo = service.clone_to_read(request, vault, tmp, cluster=cluster)
        finally:
            if cluster is not None:
                cluster.close()
        try:
            current = repo.read_file(manifest.path)
            head = repo.head()
        finally:
            repo.close()
    text = current.decode("utf-8", "replace") if current is not None else None
    found = re.search(r"^# Flux Version: (\S+)$", text or "", re.M)
    return {"fromVersion": found.group(1) if found else None, "toVersion": request.dist.version, "head": head,
            "diff": diff(posixpath.normpath(manifest.path), text, manifest.content)}


def expected_images(request) -> dict[str, list[str]]:
    """Component name → the container images its Deployment runs at the new version."""
    from shared.flux import install

    objs = _objects(install.generate(request.dist, request.opts.install_options()).content)
    return {k[2]: _images(v) for k, v in objs.items() if k[0] == "Deployment"}


def check_images(cluster, namespace: str, expected: dict[str, list[str]]) -> dict:
    """Each component Deployment's images on the cluster against ``expected``: ``{"status": "ready" |
    "pending", "message", "components": {name: {"expected", "actual"}}}``."""
    components, behind = {}, []
    for name, images in expected.items():
        live = cluster.get("apps/v1", "Deployment", name, namespace)
        actual = _images(live) if live else []
        components[name] = {"expected": images, "actual": actual}
        if actual != images:
            behind.append(f"Deployment/{namespace}/{name} runs {', '.join(actual) or 'nothing'}")
    if behind:
        return {"status": "pending", "message": "; ".join(behind), "components": components}
    return {"status": "ready", "message": f"{len(expected)} controllers run the new images", "components": components}


def run_upgrade(op, item: Item, progress, deadline: float) -> dict:
    """One cluster of an upgrade (the queue worker's runner for ``kind == "upgrade"``): its current
    record, the operation's version; a dry run returns the diff; otherwise the bootstrap drive pushes
    the new components, waits for health up to the new revision, then for the new controller images.
    Raises :class:`shared.fleet.worker.ItemFailed`."""
    from shared import services
    from shared.bootstrap import service
    from shared.clusters import BOOTSTRAP, ClusterAccess

    from .worker import PUSH_ATTEMPTS, ItemFailed, _error, _retryable, branch_lock

    version = op.spec["version"]
    timeout = float(op.spec.get("timeoutSeconds") or 0)
    try:
        record = services.registry().get(item.request.get("cluster") or item.name)
        _check_record(record, "cluster")
        request = service.check_request(_options_body(record, version), timeout=timeout)
        before = (record.install or {}).get("version")
        if op.spec.get("dryRun"):
            progress(f"► computing the upgrade of {record.name} from {before} to {version} (dry run)")
            result = dry_run(request)
            progress(f"✔ {result['diff']['file']['added']} line(s) added, {result['diff']['file']['removed']} removed")
            return {"dryRun": True, **result}
        progress(f"► upgrading {record.name} from Flux {before} to {version}")
        outcome = service.run(request, deadline=deadline, progress_sink=progress, push_attempts=PUSH_ATTEMPTS,
                              git_lock=branch_lock(request.opts.sync_url, request.opts.branch), generate_key=False)
    except service.RunFailed as failed:
        raise ItemFailed(_error(failed.error), retryable=_retryable(failed.error)) from None
    except errors.FluxOpsError as exc:
        raise ItemFailed(_error(exc), retryable=_retryable(exc)) from None
    summary = outcome.summary()
    result = {"fromVersion": before, "toVersion": outcome.result.version, "repository": summary["repository"],
              "health": summary["health"]}
    if outcome.failure:
        raise ItemFailed({"code": "HealthCheckFailed", "message": outcome.failure}, result)
    # the controllers must run the new images: kustomize-controller applies them from Git after the sync
    expected = expected_images(request)
    cluster = ClusterAccess(keyvault=services.keyvault()).connect(request.refs["cluster"], purpose=BOOTSTRAP,
                                                                 namespace=request.opts.namespace)
    try:
        progress("◎ waiting for the controllers to run the new images")
        end = min(deadline, time.monotonic() + timeout)
        while True:
            images = check_images(cluster, request.opts.namespace, expected)
            if images["status"] == "ready" or time.monotonic() >= end:
                break
            time.sleep(min(2.0, max(0.0, end - time.monotonic())))
    finally:
        cluster.close()
    result["health"]["images"] = {k: v for k, v in images.items()}
    if images["status"] != "ready":
        if timeout > 0:
            raise ItemFailed({"code": "HealthCheckFailed",
                              "message": f"timed out waiting for the new controller images: {images['message']}"}, result)
        progress(f"⚠️ the controllers do not run the new images yet: {images['message']}")
    else:
        progress("✔ the controllers run the new images")
    return result


__all__ = ["check_images", "diff", "dry_run", "expected_images", "plan_upgrade", "run_upgrade"]
