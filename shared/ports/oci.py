"""Pull (and push) Flux's release manifests as an OCI artifact, over the OCI distribution HTTP API.

Every Flux release publishes the full ``flux install --export`` output (all six controllers) as
``oci://ghcr.io/fluxcd/flux-manifests:vX.Y.Z`` (and ``docker.io/fluxcd/flux-manifests``). The
release workflow (fluxcd/flux2 ``.github/workflows/release.yaml``, job ``release-flux-manifests``)
writes ``flux-system/gotk-components.yaml`` and runs ``flux push artifact --path=./flux-system``,
which (fluxcd/pkg ``oci/client/push.go`` + ``build.go``, constants in ``oci/constants.go``) pushes:

* an OCI image manifest, media type ``application/vnd.oci.image.manifest.v1+json``, with the
  annotations ``org.opencontainers.image.created`` / ``.source`` / ``.revision``;
* a config blob of media type ``application/vnd.cncf.flux.config.v1+json``;
* exactly one layer of media type ``application/vnd.cncf.flux.content.v1.tar+gzip``: a gzipped
  tar whose member ``flux-system/gotk-components.yaml`` is the distribution.

HTTP endpoints used (OCI distribution spec v1.1, "Pulling" / "Pushing" sections):

* ``GET  /v2/<name>/manifests/<reference>``  (end-3)   fetch a manifest by tag or digest
* ``GET  /v2/<name>/blobs/<digest>``         (end-2)   fetch a blob (may redirect to a CDN)
* ``HEAD /v2/<name>/blobs/<digest>``         (end-2)   blob exists?
* ``POST /v2/<name>/blobs/uploads/``         (end-4a)  open an upload session -> ``Location``
* ``PUT  <location>?digest=<digest>``        (end-6)   monolithic upload of the blob
* ``PUT  /v2/<name>/manifests/<reference>``  (end-7)   push the manifest (tag)

Authentication: anonymous only, via the Docker/OCI token flow that ghcr.io and Docker Hub use
for public pulls (distribution ``docs/spec/auth/token.md``): a request answered ``401`` with
``WWW-Authenticate: Bearer realm="…",service="…",scope="…"`` is retried once with
``Authorization: Bearer <token>`` obtained by ``GET <realm>?service=…&scope=…`` (JSON ``token`` or
``access_token``). The token is sent only to the registry host, never across a redirect (blob
downloads from ghcr.io redirect to a CDN; ``requests`` drops ``Authorization`` on host change).

``requests`` is imported lazily (cold start). Nothing is written to disk here: the layer is
verified in memory and only the one tar member is read (a caller may pass a content-addressed
``blob_cache`` to keep verified layers).
"""

from __future__ import annotations

import gzip
import hashlib
import io
import ipaddress
import json
import logging
import re
import tarfile
import time
import zlib
from urllib.parse import urljoin, urlsplit

from shared.errors import AuthenticationFailed, InvalidInput, NotFound, UpstreamError

log = logging.getLogger(__name__)

OCI_MANIFEST_MEDIA_TYPE = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX_MEDIA_TYPE = "application/vnd.oci.image.index.v1+json"
DOCKER_MANIFEST_MEDIA_TYPE = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_MANIFEST_LIST_MEDIA_TYPE = "application/vnd.docker.distribution.manifest.list.v2+json"
FLUX_CONFIG_MEDIA_TYPE = "application/vnd.cncf.flux.config.v1+json"
FLUX_CONTENT_MEDIA_TYPE = "application/vnd.cncf.flux.content.v1.tar+gzip"

ANNOTATION_CREATED = "org.opencontainers.image.created"
ANNOTATION_SOURCE = "org.opencontainers.image.source"
ANNOTATION_REVISION = "org.opencontainers.image.revision"

#: The one tar member read from the content layer (``flux push artifact --path=./flux-system``).
GOTK_MEMBER = "flux-system/gotk-components.yaml"

# Limits. The OCI distribution spec asks registries to accept manifests of at least 4 MiB; the
# v2.9 distribution is ~320 KiB of YAML (~50 KiB gzipped), so 64 MiB is generous for the layer.
# The member read is the distribution itself: the same 16 MiB as a distribution file or download
# (shared.flux.distribution.MAX_DISTRIBUTION_BYTES) and as the YAML loader's byte bound
# (shared.safe_yaml.DISTRIBUTION), so a larger one is refused here, before it is read into memory.
MAX_MANIFEST_BYTES = 4 * 1024 * 1024
MAX_LAYER_BYTES = 64 * 1024 * 1024
MAX_MEMBER_BYTES = 16 * 1024 * 1024
MAX_UNCOMPRESSED_BYTES = 256 * 1024 * 1024
MAX_TAR_MEMBERS = 10_000

USER_AGENT = "flux-ops-python/oci"

# Reference grammar (distribution/reference, OCI distribution spec "Pulling manifests").
_HOST_COMPONENT = r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)"
_HOST = rf"(?:{_HOST_COMPONENT}(?:\.{_HOST_COMPONENT})*|\[[0-9A-Fa-f:.]+\])(?::[0-9]{{1,5}})?"
_PATH_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_REPOSITORY = rf"{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*"
_TAG = r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}"
_DIGEST = r"sha256:[a-f0-9]{64}"
_REFERENCE_RE = re.compile(
    rf"^oci://(?P<host>{_HOST})/(?P<repo>{_REPOSITORY})"
    rf"(?::(?P<tag>{_TAG}))?(?:@(?P<digest>{_DIGEST}))?$"
)
_DIGEST_RE = re.compile(rf"^{_DIGEST}$")
_CHALLENGE_PARAM_RE = re.compile(r'([A-Za-z][A-Za-z0-9_-]*)=(?:"((?:[^"\\]|\\.)*)"|([^,\s]*))')


class OCIError(UpstreamError):
    """The registry answered something unusable: not a Flux artifact, wrong media types, digest
    or size mismatch, a broken tar, an HTTP error other than 401/403/404, or a network/TLS error."""

    code = "OCIError"


# ---------------------------------------------------------------------------------------------
# References


def parse_reference(ref: str) -> tuple[str, str, str]:
    """Split ``oci://<host>[:port]/<repository>(:<tag>|@sha256:<hex>)`` into its parts.

    >>> parse_reference("oci://ghcr.io/fluxcd/flux-manifests:v2.9.2")
    ('ghcr.io', 'fluxcd/flux-manifests', 'v2.9.2')

    Returns ``(host, repository, reference)`` where ``reference`` is the tag or the digest
    (``sha256:<64 hex>``); with both ``:tag@sha256:…`` the digest wins (as in Docker). The
    ``oci://`` prefix (Flux's ``OCIRepository`` URL form) and an explicit tag or digest are
    required; the registry host is always explicit (no Docker Hub shorthand). Grammar: OCI
    distribution spec (``<name>`` components ``[a-z0-9]+((\\.|_|__|-+)[a-z0-9]+)*``, tags
    ``[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}``) and distribution/reference for the host part.

    Raises :class:`shared.errors.InvalidInput` (field ``manifests``) for anything else.
    """
    if not isinstance(ref, str) or not ref:
        raise InvalidInput("manifests", "empty OCI reference; expected oci://<registry>/<repository>:<tag>")
    if not ref.startswith("oci://"):
        raise InvalidInput("manifests", f"OCI reference {ref!r} must start with oci://")
    m = _REFERENCE_RE.fullmatch(ref)
    if not m:
        raise InvalidInput(
            "manifests",
            f"invalid OCI reference {ref!r}; expected oci://<registry>/<repository>:<tag> "
            "or oci://<registry>/<repository>@sha256:<digest> (lowercase repository)",
        )
    host, repo, tag, digest = m.group("host", "repo", "tag", "digest")
    if not tag and not digest:
        raise InvalidInput("manifests", f"OCI reference {ref!r} has no tag or digest (e.g. :v2.9.2)")
    if len(repo) > 255:
        raise InvalidInput("manifests", f"OCI repository name in {ref!r} is longer than 255 characters")
    port = host.rsplit(":", 1)[1] if re.search(r":[0-9]+$", host) else None
    if port is not None and not 0 < int(port) < 65536:
        raise InvalidInput("manifests", f"invalid port in OCI reference {ref!r}")
    return host, repo, digest or tag


def _is_loopback(host: str) -> bool:
    """``host`` is ``host[:port]`` as returned by :func:`parse_reference`."""
    name = host
    if name.startswith("["):
        name = name[1 : name.index("]")]
    elif re.search(r":[0-9]+$", name):
        name = name.rsplit(":", 1)[0]
    if name.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


# ---------------------------------------------------------------------------------------------
# HTTP client with the anonymous bearer-token flow


def _parse_challenge(header: str) -> tuple[str, dict[str, str]]:
    """``Bearer realm="…",service="…",scope="…"`` -> ``("bearer", {realm, service, scope})``."""
    header = header.strip()
    scheme, _, rest = header.partition(" ")
    params = {}
    for m in _CHALLENGE_PARAM_RE.finditer(rest):
        value = m.group(2) if m.group(2) is not None else m.group(3)
        params[m.group(1).lower()] = re.sub(r"\\(.)", r"\1", value)
    return scheme.lower(), params


def _error_codes(resp) -> str:
    """The ``errors[].code`` values of a distribution error body, for messages."""
    try:
        body = json.loads(resp.content[:65536] or b"{}")
        codes = [str(e.get("code")) for e in body.get("errors", []) if isinstance(e, dict)]
    except (ValueError, AttributeError, TypeError):
        return ""
    return " ".join(c for c in codes if c)


class _Registry:
    """One registry host; keeps the anonymous token between requests of one operation."""

    def __init__(self, host: str, repo: str, *, ca_file: str | None, insecure_http: bool, timeout: float,
                 actions: str, deadline: float | None = None):
        import requests  # lazy: keep cold start cheap

        if insecure_http and not _is_loopback(host):
            raise InvalidInput("manifests", f"insecure_http is allowed only for loopback registries, not {host}")
        self._requests = requests
        self.host = host
        api_host = "registry-1.docker.io" if host in ("docker.io", "index.docker.io") else host
        self.base = f"{'http' if insecure_http else 'https'}://{api_host}"
        self._netloc = urlsplit(self.base).netloc
        self.insecure_http = insecure_http
        self.verify: str | bool = ca_file if ca_file else True
        self.timeout = timeout
        #: ``time.monotonic()`` value: each request is capped at min(timeout, what is left of it)
        self.deadline = deadline
        self.default_scope = f"repository:{repo}:{actions}"
        self.token: str | None = None
        self.session = requests.Session()
        self.session.headers["User-Agent"] = USER_AGENT
        if _is_loopback(host):
            self.session.trust_env = False  # no proxy for loopback test registries

    def close(self) -> None:
        self.session.close()

    def url(self, path_or_url: str) -> str:
        return urljoin(self.base + "/", path_or_url)

    def request(self, method: str, path_or_url: str, *, headers: dict | None = None, data: bytes | None = None,
                stream: bool = False, params: dict | None = None):
        """Send one request; on 401 with a Bearer challenge fetch an anonymous token and retry once.

        Returns the final ``requests.Response`` (possibly still 401: callers map it).
        """
        url = self.url(path_or_url)
        for attempt in (0, 1):
            hdrs = dict(headers or {})
            if self.token and urlsplit(url).netloc == self._netloc:
                hdrs["Authorization"] = f"Bearer {self.token}"
            resp = self._send(method, url, headers=hdrs, data=data, stream=stream, params=params)
            if resp.status_code != 401 or attempt == 1:
                return resp
            challenge = resp.headers.get("WWW-Authenticate", "")
            resp.close()
            self._authenticate(challenge)
        raise AssertionError("unreachable")

    def _send(self, method, url, **kwargs):
        import time

        requests = self._requests
        timeout = self.timeout
        if self.deadline is not None:
            left = self.deadline - time.monotonic()
            if left <= 0:
                raise OCIError(f"no time left for a request to OCI registry {self.host} before the deadline")
            timeout = min(timeout, left)
        try:
            return self.session.request(method, url, verify=self.verify, timeout=timeout,
                                        allow_redirects=True, **kwargs)
        except requests.exceptions.SSLError as exc:
            raise OCIError(f"TLS error talking to OCI registry {self.host}: {exc}") from exc
        except requests.exceptions.Timeout as exc:
            capped = " (the deadline)" if timeout < self.timeout else ""
            raise OCIError(f"timeout after {timeout:.3g}s{capped} talking to OCI registry {self.host}") from exc
        except requests.exceptions.RequestException as exc:
            raise OCIError(f"cannot reach OCI registry {self.host}: {_reason(exc)}") from exc

    def _authenticate(self, challenge: str) -> None:
        scheme, params = _parse_challenge(challenge)
        if scheme != "bearer":
            raise AuthenticationFailed(
                f"OCI registry {self.host} requires {scheme or 'unknown'} authentication; "
                "only anonymous (bearer token) pulls are supported"
            )
        realm = params.get("realm", "")
        realm_scheme = urlsplit(realm).scheme
        if realm_scheme != "https" and not (realm_scheme == "http" and self.insecure_http):
            raise AuthenticationFailed(f"OCI registry {self.host} announced an unusable token realm {realm!r}")
        query = {"scope": params.get("scope") or self.default_scope}
        if params.get("service"):
            query["service"] = params["service"]
        resp = self._send("GET", realm, params=query, headers={"Accept": "application/json"})
        with resp:
            if resp.status_code != 200:
                raise AuthenticationFailed(
                    f"token endpoint of OCI registry {self.host} refused an anonymous token for "
                    f"{query['scope']!r} (HTTP {resp.status_code}); the repository may not exist or not be public"
                )
            try:
                body = resp.json()
                token = body.get("token") or body.get("access_token")
            except (ValueError, AttributeError):
                token = None
            if not isinstance(token, str) or not token:
                raise OCIError(f"token endpoint of OCI registry {self.host} answered without a token")
        self.token = token


def _raise_for(resp, ref: str, what: str) -> None:
    """Map a non-2xx registry answer to a typed error."""
    status = resp.status_code
    codes = _error_codes(resp)
    detail = f"HTTP {status}" + (f" {codes}" if codes else "")
    if status in (401, 403):
        raise AuthenticationFailed(
            f"OCI registry denied anonymous access to {ref} ({detail}); the repository may not exist or not be public"
        )
    raise OCIError(f"{what} for {ref} failed: {detail}")


def _read_limited(resp, limit: int, what: str) -> bytes:
    buf = bytearray()
    for chunk in resp.iter_content(chunk_size=65536):
        buf += chunk
        if len(buf) > limit:
            resp.close()
            raise OCIError(f"{what} is larger than {limit} bytes")
    return bytes(buf)


def _sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


# ---------------------------------------------------------------------------------------------
# Manifest checks and the content layer


def _check_descriptor(desc, what: str, ref: str, media_type: str, max_size: int) -> tuple[str, int]:
    if not isinstance(desc, dict):
        raise OCIError(f"{ref}: manifest {what} descriptor is missing or not an object")
    got_type = desc.get("mediaType")
    if got_type != media_type:
        raise OCIError(f"{ref}: {what} media type is {got_type!r}, expected {media_type!r} (not a Flux artifact)")
    digest, size = desc.get("digest"), desc.get("size")
    if not isinstance(digest, str) or not _DIGEST_RE.fullmatch(digest):
        raise OCIError(f"{ref}: {what} digest {digest!r} is not a sha256 digest")
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise OCIError(f"{ref}: {what} size {size!r} is invalid")
    if size > max_size:
        raise OCIError(f"{ref}: {what} is {size} bytes, more than the {max_size} bytes allowed")
    return digest, size


def _check_manifest(body: bytes, content_type: str, ref: str) -> tuple[str, int]:
    """Validate a Flux artifact manifest; return the (digest, size) of its content layer."""
    try:
        manifest = json.loads(body)
    except ValueError as exc:
        raise OCIError(f"{ref}: manifest is not valid JSON: {exc}") from exc
    if not isinstance(manifest, dict):
        raise OCIError(f"{ref}: manifest is not a JSON object")
    body_type = manifest.get("mediaType")
    header_type = content_type.split(";", 1)[0].strip()
    media_type = body_type or header_type
    if body_type and header_type and header_type != body_type:
        raise OCIError(f"{ref}: manifest Content-Type {header_type!r} disagrees with its mediaType {body_type!r}")
    if media_type != OCI_MANIFEST_MEDIA_TYPE:
        raise OCIError(
            f"{ref}: manifest media type is {media_type!r}, expected {OCI_MANIFEST_MEDIA_TYPE!r} "
            "(flux push artifact writes an OCI image manifest)"
        )
    if manifest.get("schemaVersion") != 2:
        raise OCIError(f"{ref}: manifest schemaVersion is {manifest.get('schemaVersion')!r}, expected 2")
    _check_descriptor(manifest.get("config"), "config", ref, FLUX_CONFIG_MEDIA_TYPE, MAX_MANIFEST_BYTES)
    layers = manifest.get("layers")
    if not isinstance(layers, list) or len(layers) != 1:
        n = len(layers) if isinstance(layers, list) else "no"
        raise OCIError(f"{ref}: manifest has {n} layers, a Flux artifact has exactly one {FLUX_CONTENT_MEDIA_TYPE} layer")
    return _check_descriptor(layers[0], "layer", ref, FLUX_CONTENT_MEDIA_TYPE, MAX_LAYER_BYTES)


class _LimitedReader(io.RawIOBase):
    """Counts bytes read from a decompressing stream; stops a gzip bomb at ``limit``."""

    def __init__(self, inner, limit: int):
        self._inner, self._limit, self.count = inner, limit, 0

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        data = self._inner.read(len(b))
        self.count += len(data)
        if self.count > self._limit:
            raise OCIError(f"content layer decompresses to more than {self._limit} bytes")
        b[: len(data)] = data
        return len(data)


def _extract_member(layer: bytes, ref: str) -> bytes:
    """Read ``flux-system/gotk-components.yaml`` from the tar.gz ``layer``, in memory only.

    Only a regular-file member with exactly that name (a leading ``./`` tolerated) is read;
    links, devices, absolute or ``..`` paths never match; duplicates are refused. The tar is read
    as a stream (``r|``), nothing is extracted to disk.
    """
    found: bytes | None = None
    try:
        raw = _LimitedReader(gzip.GzipFile(fileobj=io.BytesIO(layer), mode="rb"), MAX_UNCOMPRESSED_BYTES)
        with tarfile.open(fileobj=io.BufferedReader(raw), mode="r|") as tar:
            for n, member in enumerate(tar, start=1):
                if n > MAX_TAR_MEMBERS:
                    raise OCIError(f"{ref}: content layer has more than {MAX_TAR_MEMBERS} entries")
                name = member.name
                while name.startswith("./"):
                    name = name[2:]
                if name != GOTK_MEMBER:
                    continue
                if member.type not in (tarfile.REGTYPE, tarfile.AREGTYPE):
                    raise OCIError(f"{ref}: {GOTK_MEMBER} in the content layer is not a regular file")
                if found is not None:
                    raise OCIError(f"{ref}: content layer holds {GOTK_MEMBER} more than once")
                if member.size > MAX_MEMBER_BYTES:
                    raise OCIError(f"{ref}: {GOTK_MEMBER} is larger than {MAX_MEMBER_BYTES} bytes")
                fobj = tar.extractfile(member)
                found = fobj.read() if fobj is not None else b""
    except OCIError:
        raise
    except (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile, OSError) as exc:
        raise OCIError(f"{ref}: content layer is not a valid tar.gz: {exc}") from exc
    if found is None:
        raise OCIError(f"{ref}: content layer does not contain {GOTK_MEMBER}")
    return found


# ---------------------------------------------------------------------------------------------
# Public API


def pull_flux_manifests(ref: str, *, ca_file: str | None = None, insecure_http: bool = False,
                        timeout: float = 30.0, blob_cache=None, deadline: float | None = None) -> bytes:
    """Return the bytes of ``flux-system/gotk-components.yaml`` from the Flux artifact at ``ref``.

    ``ref`` is ``oci://<registry>/<repository>:<tag>`` or ``…@sha256:<digest>`` (see
    :func:`parse_reference`), e.g. ``oci://ghcr.io/fluxcd/flux-manifests:v2.9.2``.

    Steps: ``GET /v2/<name>/manifests/<reference>`` (anonymous bearer token on 401); the manifest
    must be an OCI image manifest (Content-Type and ``mediaType``), its sha256 must match the
    requested digest or the ``Docker-Content-Digest`` header; its config must be
    ``application/vnd.cncf.flux.config.v1+json`` and it must have exactly one layer of
    ``application/vnd.cncf.flux.content.v1.tar+gzip``. That layer is fetched with
    ``GET /v2/<name>/blobs/<digest>``, its size and sha256 checked against the descriptor, and
    the single member read in memory (:func:`_extract_member`).

    ``ca_file``: PEM bundle to verify the registry (and its token realm) instead of the system
    store. ``insecure_http``: talk plain ``http://`` — refused unless the host is loopback
    (local test registries). ``timeout``: per HTTP request, seconds; with ``deadline`` (a
    ``time.monotonic()`` value) at most what is left of it, and no request starts after it.

    Raises :class:`shared.errors.InvalidInput` (bad ref), :class:`shared.errors.NotFound`
    (manifest or repository unknown: HTTP 404), :class:`shared.errors.AuthenticationFailed`
    (401/403 even with an anonymous token, or a non-Bearer challenge), :class:`OCIError`
    (everything else that is wrong).

    ``blob_cache``: optional content-addressed store (``get(digest, max_bytes)`` → verified bytes
    or None, ``put(digest, data)``, as :class:`shared.flux.distribution.BlobCache`); the layer is
    taken from it by the digest the manifest just fetched names, else downloaded and stored.
    """
    host, repo, reference = parse_reference(ref)
    reg = _Registry(host, repo, ca_file=ca_file, insecure_http=insecure_http, timeout=timeout, actions="pull",
                    deadline=deadline)
    try:
        accept = ", ".join((OCI_MANIFEST_MEDIA_TYPE, OCI_INDEX_MEDIA_TYPE, DOCKER_MANIFEST_MEDIA_TYPE,
                            DOCKER_MANIFEST_LIST_MEDIA_TYPE))
        resp = reg.request("GET", f"/v2/{repo}/manifests/{reference}", headers={"Accept": accept}, stream=True)
        with resp:
            if resp.status_code == 404:
                codes = _error_codes(resp)
                raise NotFound(f"OCI artifact {ref} not found (HTTP 404{' ' + codes if codes else ''})")
            if resp.status_code != 200:
                _raise_for(resp, ref, "fetching the manifest")
            body = _read_limited(resp, MAX_MANIFEST_BYTES, f"manifest of {ref}")
            content_type = resp.headers.get("Content-Type", "")
            header_digest = resp.headers.get("Docker-Content-Digest", "")
        digest = _sha256(body)
        if reference.startswith("sha256:") and digest != reference:
            raise OCIError(f"{ref}: manifest digest is {digest}, not the requested one")
        if header_digest.startswith("sha256:") and header_digest != digest:
            raise OCIError(f"{ref}: manifest digest is {digest} but the registry announced {header_digest}")
        layer_digest, layer_size = _check_manifest(body, content_type, ref)
        log.debug("pulling %s: manifest %s, layer %s (%d bytes)", ref, digest, layer_digest, layer_size)

        layer = blob_cache.get(layer_digest, layer_size) if blob_cache is not None else None
        if layer is None:
            resp = reg.request("GET", f"/v2/{repo}/blobs/{layer_digest}", stream=True)
            with resp:
                if resp.status_code != 200:
                    _raise_for(resp, ref, f"fetching layer {layer_digest}")
                layer = _read_limited(resp, layer_size, f"layer {layer_digest} of {ref} (manifest says {layer_size} bytes)")
            if len(layer) != layer_size:
                raise OCIError(f"{ref}: layer {layer_digest} is {len(layer)} bytes, the manifest says {layer_size}")
            if _sha256(layer) != layer_digest:
                raise OCIError(f"{ref}: layer digest mismatch: got {_sha256(layer)}, the manifest says {layer_digest}")
            if blob_cache is not None:
                blob_cache.put(layer_digest, layer)
        return _extract_member(layer, ref)
    finally:
        reg.close()


def build_flux_layer(gotk_components: bytes) -> bytes:
    """The tar.gz ``flux push artifact --path=./flux-system`` would build: a ``flux-system``
    directory entry and ``flux-system/gotk-components.yaml``, uid/gid 0, no names, zero mtimes
    (fluxcd/pkg ``oci/client/build.go`` strips these). Deterministic for given bytes."""
    tar_buf = io.BytesIO()
    with tarfile.open(fileobj=tar_buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in (("flux-system", None), (GOTK_MEMBER, gotk_components)):
            info = tarfile.TarInfo(name)
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            info.mtime = 0
            if data is None:
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                tar.addfile(info)
            else:
                info.mode, info.size = 0o644, len(data)
                tar.addfile(info, io.BytesIO(data))
    gz_buf = io.BytesIO()
    with gzip.GzipFile(fileobj=gz_buf, mode="wb", mtime=0) as gz:
        gz.write(tar_buf.getvalue())
    return gz_buf.getvalue()


def _upload_blob(reg: _Registry, repo: str, data: bytes, ref: str) -> str:
    digest = _sha256(data)
    resp = reg.request("HEAD", f"/v2/{repo}/blobs/{digest}")
    resp.close()
    if resp.status_code == 200:
        return digest
    if resp.status_code not in (404,):
        _raise_for(resp, ref, f"checking blob {digest}")
    resp = reg.request("POST", f"/v2/{repo}/blobs/uploads/")
    with resp:
        if resp.status_code != 202 or not resp.headers.get("Location"):
            _raise_for(resp, ref, "opening a blob upload")
        location = reg.url(resp.headers["Location"])
    sep = "&" if "?" in location else "?"
    resp = reg.request("PUT", f"{location}{sep}digest={digest}", data=data,
                       headers={"Content-Type": "application/octet-stream"})
    with resp:
        if resp.status_code != 201:
            _raise_for(resp, ref, f"uploading blob {digest}")
    return digest


def push_flux_manifests(ref: str, gotk_components: bytes, *, ca_file: str | None = None,
                        insecure_http: bool = False, source: str = "", revision: str = "",
                        timeout: float = 30.0) -> str:
    """Push ``gotk_components`` as a Flux artifact to ``ref`` (must be a tag); return the
    manifest digest ``sha256:<hex>``.

    Mirrors ``flux push artifact --path=./flux-system`` (fluxcd/pkg ``oci/client/push.go``): the
    layer is :func:`build_flux_layer`, media type ``application/vnd.cncf.flux.content.v1.tar+gzip``;
    the config blob (``application/vnd.cncf.flux.config.v1+json``) is the image config
    go-containerregistry writes for ``empty.Image`` + one appended layer; the OCI image manifest
    carries ``org.opencontainers.image.created`` (RFC 3339, now) and, when given,
    ``org.opencontainers.image.source`` / ``.revision``. Blobs: ``HEAD`` (skip if present),
    ``POST /v2/<name>/blobs/uploads/`` then ``PUT <Location>?digest=…``; manifest:
    ``PUT /v2/<name>/manifests/<tag>``. Anonymous bearer flow as in :func:`pull_flux_manifests`
    (no credentials are supported: meant for local test/demo registries).

    Raises like :func:`pull_flux_manifests`; a digest ref raises ``InvalidInput``.
    """
    host, repo, tag = parse_reference(ref)
    if tag.startswith("sha256:"):
        raise InvalidInput("manifests", f"push needs a tag, not a digest: {ref!r}")
    if not isinstance(gotk_components, (bytes, bytearray)) or not gotk_components:
        raise InvalidInput("manifests", "gotk-components.yaml content is empty")
    layer = build_flux_layer(bytes(gotk_components))
    diff_id = _sha256(gzip.decompress(layer))
    config = json.dumps(
        {
            "architecture": "",
            "created": "0001-01-01T00:00:00Z",
            "history": [{"created": "0001-01-01T00:00:00Z"}],
            "os": "",
            "rootfs": {"type": "layers", "diff_ids": [diff_id]},
            "config": {},
        },
        separators=(",", ":"),
    ).encode()
    annotations = {ANNOTATION_CREATED: time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    if source:
        annotations[ANNOTATION_SOURCE] = source
    if revision:
        annotations[ANNOTATION_REVISION] = revision

    reg = _Registry(host, repo, ca_file=ca_file, insecure_http=insecure_http, timeout=timeout, actions="pull,push")
    try:
        config_digest = _upload_blob(reg, repo, config, ref)
        layer_digest = _upload_blob(reg, repo, layer, ref)
        manifest = json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": OCI_MANIFEST_MEDIA_TYPE,
                "config": {"mediaType": FLUX_CONFIG_MEDIA_TYPE, "size": len(config), "digest": config_digest},
                "layers": [{"mediaType": FLUX_CONTENT_MEDIA_TYPE, "size": len(layer), "digest": layer_digest}],
                "annotations": dict(sorted(annotations.items())),
            },
            separators=(",", ":"),
        ).encode()
        digest = _sha256(manifest)
        resp = reg.request("PUT", f"/v2/{repo}/manifests/{tag}", data=manifest,
                           headers={"Content-Type": OCI_MANIFEST_MEDIA_TYPE})
        with resp:
            if resp.status_code != 201:
                _raise_for(resp, ref, "pushing the manifest")
            announced = resp.headers.get("Docker-Content-Digest", "")
        if announced and announced != digest:
            raise OCIError(f"{ref}: registry stored the manifest as {announced}, expected {digest}")
        return digest
    finally:
        reg.close()


def _reason(exc: BaseException) -> str:
    """What went wrong with a connection, in a few words (not urllib3's nested reprs): ``name
    resolution failed (no network or DNS?)``, ``connection refused``, ... ; else the exception's text."""
    import socket

    seen, cur = 0, exc
    while cur is not None and seen < 10:
        name = type(cur).__name__
        if name == "NameResolutionError" or isinstance(cur, socket.gaierror):
            return "name resolution failed (no network or DNS?)"
        if isinstance(cur, ConnectionRefusedError):
            return "connection refused"
        if isinstance(cur, (ConnectionResetError, BrokenPipeError)):
            return "connection reset"
        if isinstance(cur, OSError) and cur.errno is not None and cur.strerror:
            return cur.strerror.lower()
        nxt = cur.__cause__ or cur.__context__ or getattr(cur, "reason", None)
        if nxt is None and cur.args and isinstance(cur.args[0], BaseException):
            nxt = cur.args[0]
        cur, seen = nxt, seen + 1
    return str(exc)
