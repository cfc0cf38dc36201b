"""The fleet's status: one row per registered cluster, read from Git and from the cluster.

For each record of the registry (:mod:`shared.rotation.registry`), at most ``concurrency`` clusters at a
time (``FLEET_STATUS_CONCURRENCY``, default 16), each isolated from the others' failures:

* **Git** (one clone per repository and branch, shared by the clusters that sync from it): the branch
  head and the Flux version of ``<path>/<namespace>/gotk-components.yaml`` (its ``# Flux Version:``
  header, as ``flux bootstrap`` writes it), read with the cluster's own Git credential (the PAT from
  Key Vault, bound by its tag to the URL, or the Function's Entra ID token);
* **the cluster** (:class:`shared.clusters.ClusterAccess`, read only): the version the controllers run
  (the ``app.kubernetes.io/version`` label Flux puts on them, and their images), GitRepository and
  Kustomization ``<ns>/<ns>``: ``Ready`` with its reason and message, the artifact and applied revision,
  ``suspend``; the applied revision against the branch head;
* **the app's records**: the last rotation result (:func:`record_rotation` keeps it), the PAT's Key
  Vault expiry, the cluster's last fleet operation.

A cluster that cannot be reached, or a repository that cannot be read, is a row with its ``error``; the
other rows are whole. ``state`` sums a row up for a table's colours: ``ready`` (Ready and in sync),
``progressing`` (not Ready yet, or behind the branch head), ``failed`` (Ready=False, or the last
operation or rotation failed), ``suspended``, ``unreachable`` (no answer from the cluster) or ``unknown``.
"""

from __future__ import annotations

import logging
import os
import re
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from typing import Any, Mapping

from shared import errors
from shared.memo import Memo

log = logging.getLogger(__name__)

SOURCE_API = "source.toolkit.fluxcd.io/v1"
KUSTOMIZE_API = "kustomize.toolkit.fluxcd.io/v1"
_VERSION = re.compile(r"^# Flux Version: (\S+)$", re.M)
DEFAULT_CONCURRENCY = 16


def concurrency_setting(environ: Mapping[str, str] = os.environ) -> int:
    """``FLEET_STATUS_CONCURRENCY``: clusters read at once (1-64, default 16)."""
    from shared.settings import number

    return int(number(environ, "FLEET_STATUS_CONCURRENCY", DEFAULT_CONCURRENCY, integer=True, minimum=1, maximum=64))


def _condition(obj: dict | None) -> dict:
    """``{"ready", "reason", "message", "suspended"}`` of a Flux object (``ready``: True/False/None)."""
    if obj is None:
        return {"ready": None, "reason": "NotFound", "message": "not found", "suspended": False}
    ready = next((c for c in (obj.get("status") or {}).get("conditions") or [] if c.get("type") == "Ready"), None)
    value = {"True": True, "False": False}.get((ready or {}).get("status"))
    return {"ready": value, "reason": (ready or {}).get("reason") or "", "message": ((ready or {}).get("message") or "")[:500],
            "suspended": bool((obj.get("spec") or {}).get("suspend"))}


def _sha(revision: str | None) -> str | None:
    """The commit of a Flux revision (``main@sha1:<sha>``, legacy ``main/<sha>``)."""
    if not revision:
        return None
    return revision.rpartition(":")[2] if "@sha1:" in revision else revision.rpartition("/")[2] or None


class StatusReader:
    """One status read of the fleet (:meth:`read`). ``registry``, ``store``, ``vault`` default to
    :mod:`shared.services`; ``access`` to a :class:`~shared.clusters.ClusterAccess` on the vault."""

    def __init__(self, *, registry=None, store=None, vault=None, access=None, concurrency: int | None = None,
                 workdir: str | None = None):
        from shared import services

        self.registry = registry or services.registry()
        self._store = store
        self._vault = vault
        self._access = access
        self.concurrency = concurrency or concurrency_setting()
        self.workdir = workdir
        self._git = Memo()
        self._secrets = Memo()

    @property
    def vault(self):
        if self._vault is None:
            from shared import services

            self._vault = services.keyvault()
        return self._vault

    @property
    def access(self):
        if self._access is None:
            from shared.clusters import ClusterAccess

            self._access = ClusterAccess(keyvault=self.vault)
        return self._access

    # -- git ----------------------------------------------------------------------------------------

    def _secret(self, name: str):
        return self._secrets.get(name, lambda: self.vault.get_secret(name, field="patSecret"))

    def _clone(self, record, tmp: str):
        """One clone per (URL, branch): the branch head and the files of every cluster it holds."""
        from shared.bootstrap import service
        from shared.ports.git import GitAuth, Repository
        from shared.trust import GitPolicy, git_credential

        branch = (record.install or {}).get("branch", "main")
        if record.git_auth == "ssh":
            return self._ssh_clone(record, tmp)
        policy = GitPolicy.from_settings()
        entra = record.git_auth.startswith("entra-") or record.git_auth == "workload-identity"
        destination = policy.destination(record.git_url, allow_insecure_http=record.allow_insecure_http,
                                         bearer=entra, field="gitUrl")

        def clone():
            if record.git_auth == "pat":
                auth = GitAuth(record.username, password=git_credential(self._secret(record.pat_secret), destination,
                                                                        field="patSecret"))
            elif record.git_auth in ("entra-bearer", "entra-password", "workload-identity"):
                # workload identity: the app reads (and upgrades push) with the Function's Entra ID token
                token = service.entra_token()
                auth = (GitAuth(record.username, password=token) if record.git_auth == "entra-password"
                        else GitAuth(record.username, bearer_token=token))
            else:
                raise errors.InvalidInput("gitAuth", f"Git auth {record.git_auth!r}: the repository is not read")
            folder = tempfile.mkdtemp(prefix="fleet-status-", dir=tmp)
            return Repository.clone(str(destination), branch, auth, folder, allow_insecure_http=record.allow_insecure_http,
                                    policy=policy)

        return self._git.get((str(destination), branch), clone)

    def _ssh_clone(self, record, tmp: str):
        """A cluster bootstrapped over SSH: the repository read as its upgrade would push it
        (:func:`shared.bootstrap.service.clone_to_read` of the record's request): with its stored SSH key,
        the host key checked against the cluster's ``known_hosts`` (or with ``sshHostname`` over https
        with the recorded PAT). One clone per URL pushed to and branch, as for the other modes."""
        from shared.bootstrap import options_from_request, service
        from shared.clusters import ROTATION

        from .upgrade import _options_body

        opts, refs = options_from_request(_options_body(record, record.install["version"]))
        request = service.Request(opts, refs, None)

        def clone():
            folder = tempfile.mkdtemp(prefix="fleet-status-", dir=tmp)
            if not opts.git_url.startswith("ssh://"):
                return service.clone_to_read(request, self.vault, folder)
            cluster = self.access.connect(record.cluster_ref, purpose=ROTATION, namespace=record.namespace)
            try:
                return service.clone_to_read(request, self.vault, folder, cluster=cluster)
            finally:
                cluster.close()

        return self._git.get((opts.git_url, opts.branch), clone)

    def _git_row(self, record, tmp: str) -> dict:
        install = record.install or {}
        path = install.get("path", "")
        out: dict[str, Any] = {"url": record.git_url, "branch": install.get("branch"), "path": path or "./"}
        if not record.git_url or not install:
            out["error"] = "no install options recorded (registered by hand): the repository is not read"
            return out
        try:
            repo = self._clone(record, tmp)
            out["head"] = repo.head()
            rel = "/".join(p for p in ((path[2:] if path.startswith("./") else path), record.namespace,
                                       "gotk-components.yaml") if p)
            data = repo.read_file(rel, max_bytes=16 * 1024 * 1024)
            found = _VERSION.search((data or b"")[:2048].decode("utf-8", "replace"))
            out["fluxVersion"] = found.group(1) if found else None
            if data is None:
                out["error"] = f"{rel} not found on branch {out['branch']}"
        except errors.FluxOpsError as exc:
            out["error"] = str(exc)
        return out

    # -- the cluster ----------------------------------------------------------------------------------

    def _cluster_row(self, record) -> dict:
        from shared.clusters import ROTATION

        ns = record.namespace
        components = list((record.install or {}).get("components") or
                          ["source-controller", "kustomize-controller", "helm-controller", "notification-controller"])
        components += list((record.install or {}).get("componentsExtra") or [])
        out: dict[str, Any] = {}
        try:
            cluster = self.access.connect(record.cluster_ref, purpose=ROTATION, namespace=ns)
        except errors.FluxOpsError as exc:
            return {"error": str(exc), "unreachable": isinstance(exc, errors.UpstreamError)}
        try:
            repo = cluster.get(SOURCE_API, "GitRepository", record.git_repository, ns)
            ks = cluster.get(KUSTOMIZE_API, "Kustomization", ns, ns)
            out["gitRepository"] = {**_condition(repo), "revision": ((repo or {}).get("status") or {}).get("artifact", {}).get("revision")}
            out["kustomization"] = {**_condition(ks), "revision": ((ks or {}).get("status") or {}).get("lastAppliedRevision"),
                                    "lastAttemptedRevision": ((ks or {}).get("status") or {}).get("lastAttemptedRevision")}
            images, versions = {}, set()
            for name in components:
                dep = cluster.get("apps/v1", "Deployment", name, ns)
                if dep is None:
                    continue
                labels = (dep.get("metadata") or {}).get("labels") or {}
                if labels.get("app.kubernetes.io/version"):
                    versions.add(labels["app.kubernetes.io/version"])
                containers = ((dep.get("spec") or {}).get("template") or {}).get("spec", {}).get("containers") or []
                images[name] = next((c.get("image") for c in containers if c.get("name") == "manager"),
                                    containers[0].get("image") if containers else None)
            out["flux"] = {"version": ", ".join(sorted(versions)) or None, "images": images,
                           "missing": [c for c in components if c not in images]}
        except errors.FluxOpsError as exc:
            out = {"error": str(exc), "unreachable": isinstance(exc, errors.UpstreamError) and "unreachable" in str(exc)}
        finally:
            cluster.close()
        return out

    # -- rows -------------------------------------------------------------------------------------------

    def _pat(self, record) -> dict | None:
        name = record.pat_secret if record.git_auth == "pat" else None
        if record.git_auth == "ssh" and "sshHostname" in (record.install or {}):
            name = record.install.get("passwordSecret")  # the PAT the app pushes with over https
        if not name:
            return None
        out: dict[str, Any] = {"secret": name}
        try:
            secret = self._secret(name)
        except errors.FluxOpsError as exc:
            out["error"] = str(exc)
            return out
        if secret.expires_on is not None:
            out["expiresOn"] = secret.expires_on.isoformat().replace("+00:00", "Z")
            out["daysLeft"] = round((secret.expires_on - datetime.now(timezone.utc)).total_seconds() / 86400, 1)
        return out

    def row(self, record, tmp: str, extras: dict) -> dict:
        """The status row of one record (never raises: errors are fields)."""
        started = time.monotonic()
        ref = record.cluster_ref
        row: dict[str, Any] = {"name": record.name, "cluster": str(ref), "namespace": record.namespace}
        try:
            row["git"] = self._git_row(record, tmp)
            row.update(self._cluster_row(record))
            row["pat"] = self._pat(record)
        except Exception as exc:  # noqa: BLE001 - one cluster never breaks the table
            log.error("fleet status: %s failed unexpectedly", record.name, exc_info=True)
            row["error"] = f"internal error ({type(exc).__name__}); see the Function's log"
        row["rotation"] = extras.get("rotations", {}).get(record.name)
        row["lastOperation"] = extras.get("last", {}).get(record.name)
        applied = _sha((row.get("kustomization") or {}).get("revision"))
        head = (row.get("git") or {}).get("head")
        row["inSync"] = bool(applied and head and applied == head) if "kustomization" in row else None
        row["suspended"] = any((row.get(k) or {}).get("suspended") for k in ("gitRepository", "kustomization"))
        row["state"] = _state(row)
        row["durationMs"] = int((time.monotonic() - started) * 1000)
        return row

    def read(self, names: str | None = None) -> dict:
        """``{"generatedAt", "durationSeconds", "counts": {state: n}, "clusters": [row], "invalid":
        [{"name", "error"}]}``; ``names`` is a glob on the registry names. Raises only when the
        registry cannot be read."""
        import fnmatch

        t0 = time.monotonic()
        records, invalid = self.registry.scan()
        if names:
            records = [r for r in records if fnmatch.fnmatchcase(r.name, names)]
        extras: dict = {}
        try:
            store = self._store
            if store is None:
                from shared import services

                store = services.fleet_store()
            extras = {"rotations": store.rotations(), "last": store.last_operations()}
        except errors.FluxOpsError as exc:
            log.warning("fleet status: no rotation or operation history: %s", exc)
        with tempfile.TemporaryDirectory(prefix="fleet-status-", dir=self.workdir) as tmp:
            with ThreadPoolExecutor(max(1, min(self.concurrency, len(records) or 1)), thread_name_prefix="fleet-status") as pool:
                rows = list(pool.map(lambda r: self.row(r, tmp, extras), records))
            self._close_clones()
        counts: dict[str, int] = {}
        for row in rows:
            counts[row["state"]] = counts.get(row["state"], 0) + 1
        return {"generatedAt": datetime.now(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z"),
                "durationSeconds": round(time.monotonic() - t0, 3), "counts": counts, "clusters": rows,
                "invalid": [{"name": n, "error": e} for n, e in invalid]}

    def _close_clones(self) -> None:
        for repo in self._git.results():
            if repo is not None:
                try:
                    repo.close()
                except Exception:  # noqa: BLE001
                    pass


def _state(row: dict) -> str:
    if row.get("unreachable"):
        return "unreachable"
    if row.get("suspended"):
        return "suspended"
    gr, ks = row.get("gitRepository") or {}, row.get("kustomization") or {}
    failed_op = (row.get("lastOperation") or {}).get("state") == "failed"
    failed_rotation = (row.get("rotation") or {}).get("status") == "failed"
    if gr.get("ready") is False or ks.get("ready") is False or failed_op or failed_rotation:
        return "failed"
    if row.get("error") and "kustomization" not in row:
        return "unknown"
    if gr.get("ready") and ks.get("ready") and row.get("inSync"):
        return "ready"
    return "progressing"


def fleet_status(**kwargs) -> dict:
    """:meth:`StatusReader.read` with the app's services (``names`` as a keyword)."""
    names = kwargs.pop("names", None)
    return StatusReader(**kwargs).read(names)


def record_rotation(summary) -> None:
    """Keep each cluster's last rotation result for the status (best effort: never raises)."""
    try:
        from shared import services

        store = services.fleet_store()
        at = summary.started_at.isoformat().replace("+00:00", "Z")
        for result in summary.clusters:
            d = result.to_dict()
            store.set_rotation(result.cluster, {"status": d["status"], "at": at, "changes": d["changes"][:10],
                                                "warnings": d["warnings"][:10], "errors": d["errors"][:10]})
    except Exception as exc:  # noqa: BLE001 - the rotation's own result stands
        log.debug("fleet status: rotation results not recorded: %s", exc)




def _short(revision: str | None) -> str:
    sha = _sha(revision)
    return sha[:8] if sha else "-"


def format_table(status: dict) -> str:
    """The status as a text table, one line per cluster (as ``flux get`` prints): NAME, STATE, GIT (the
    Flux version in Git), CLUSTER (the version the controllers run), READY (GitRepository/Kustomization),
    REVISION (applied/head), SUSPENDED, ROTATION, PAT (days left), LAST OPERATION, MESSAGE."""
    head = ["NAME", "STATE", "GIT", "CLUSTER", "READY", "REVISION", "SUSPENDED", "ROTATION", "PAT", "LAST OPERATION", "MESSAGE"]
    lines = [head]
    for row in status["clusters"]:
        git, flux = row.get("git") or {}, row.get("flux") or {}
        gr, ks = row.get("gitRepository") or {}, row.get("kustomization") or {}
        ready = "-" if not (gr or ks) else f"{_tri(gr.get('ready'))}/{_tri(ks.get('ready'))}"
        revision = "-" if not (ks or git) else f"{_short(ks.get('revision'))}/{(git.get('head') or '-')[:8]}" + \
            ("" if row.get("inSync") in (None, True) else " behind")
        pat = row.get("pat") or {}
        days = f"{pat['daysLeft']:g}d" if "daysLeft" in pat else ("-" if not pat.get("error") else "error")
        last = row.get("lastOperation") or {}
        message = row.get("error") or (ks.get("message") if ks.get("ready") is False else "") or \
            (gr.get("message") if gr.get("ready") is False else "") or git.get("error") or ""
        lines.append([row["name"], row["state"], git.get("fluxVersion") or "-", flux.get("version") or "-", ready, revision,
                      "yes" if row.get("suspended") else "no", (row.get("rotation") or {}).get("status", "-"), days,
                      f"{last.get('kind')} {last.get('state')}" if last else "-", message.replace("\n", " ")[:120]])
    widths = [max(len(str(r[i])) for r in lines) for i in range(len(head) - 1)]
    out = ["  ".join(str(v).ljust(w) for v, w in zip(r[:-1], widths)) + "  " + str(r[-1]) for r in lines]
    if status.get("invalid"):
        out.append(f"{len(status['invalid'])} invalid registry record(s): " + ", ".join(i["name"] for i in status["invalid"]))
    return "\n".join(line.rstrip() for line in out)


def _tri(value) -> str:
    return {True: "True", False: "False"}.get(value, "Unknown")


__all__ = ["StatusReader", "concurrency_setting", "fleet_status", "format_table", "record_rotation"]
