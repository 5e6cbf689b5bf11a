"""``gpuledger healthcheck``: the container's HEALTHCHECK, read from the agent's own config.

The image's first HEALTHCHECK fetched ``http://127.0.0.1:PORT/healthz`` with urllib and
so always failed once TLS was on: with plain TLS it needed the full URL in an undocumented
variable and a CA bundle that trusts a private CA, and with mutual TLS it could not pass
at all (issue 16). This check reads the same config file as the agent (and the same
``GPULEDGER_*`` variables), so it knows the port and whether TLS is on, and:

- **plain HTTP**: ``GET /healthz`` must answer 200;
- **TLS**: the server must present exactly the certificate of ``http.tls_cert_file`` (it
  is trusted as the anchor, with partial chains allowed; the host name is not checked,
  since the check dials the loopback address, not the name on the certificate), then
  ``GET /healthz`` must answer 200. No CA bundle is needed, a private CA is fine;
- **mutual TLS**: the check offers the agent's own certificate and key as its client
  certificate. If the client CA accepts it, 200 is required as above. If the agent
  refuses it (TLS 1.3 applies the client CA after the handshake, and uvicorn then closes
  without an answer; TLS 1.2 sends an alert in the handshake), the listener is still
  shown to be serving: the agent's event loop completed a handshake presenting its own
  configured certificate. A stopped or hung agent completes none, and fails the check.

A listener on ``0.0.0.0`` or ``::`` is dialled on the loopback of the same family.
``HEALTHCHECK_URL`` (not a ``GPULEDGER_`` name: the agent refuses unknown ones) replaces
the URL, for a listener the config does not describe.
"""

from __future__ import annotations

import http.client
import ssl
from dataclasses import dataclass
from urllib.parse import urlsplit

from gpuledger.agent.config import AgentConfig

__all__ = ["HealthResult", "check", "health_url"]

# Alerts a server sends when it refuses the client's certificate (OpenSSL's reason names).
_REFUSED_CLIENT_CERT = (
    "CERTIFICATE_REQUIRED",
    "UNKNOWN_CA",
    "BAD_CERTIFICATE",
    "CERTIFICATE_UNKNOWN",
    "DECRYPT_ERROR",
)


_REFUSED = "verified handshake; mutual TLS refused this check's certificate"


@dataclass(frozen=True, slots=True)
class HealthResult:
    healthy: bool
    message: str


def health_url(cfg: AgentConfig) -> str:
    host = cfg.listen.host
    if host in ("0.0.0.0", ""):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    if ":" in host:
        host = f"[{host}]"
    scheme = "https" if cfg.http.tls else "http"
    return f"{scheme}://{host}:{cfg.listen.port}/healthz"


def _tls_context(cfg: AgentConfig) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_REQUIRED
    if cfg.http.tls_cert_file is not None:
        ctx.load_verify_locations(cafile=str(cfg.http.tls_cert_file))
        ctx.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN
        if cfg.http.tls_client_ca_file is not None and cfg.http.tls_key_file is not None:
            ctx.load_cert_chain(str(cfg.http.tls_cert_file), str(cfg.http.tls_key_file))
    else:  # HEALTHCHECK_URL with https but no TLS in the config: the system's CAs
        ctx.load_default_certs()
    return ctx


def check(cfg: AgentConfig, url: str | None = None, timeout_s: float = 4.0) -> HealthResult:
    """One ``GET /healthz`` as described above."""
    target = url or health_url(cfg)
    parts = urlsplit(target)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return HealthResult(False, f"not an http(s) URL: {target}")
    path = parts.path or "/"
    conn: http.client.HTTPConnection
    if parts.scheme == "https":
        conn = http.client.HTTPSConnection(
            parts.hostname, parts.port or 443, timeout=timeout_s, context=_tls_context(cfg)
        )
    else:
        conn = http.client.HTTPConnection(parts.hostname, parts.port or 80, timeout=timeout_s)
    mutual = parts.scheme == "https" and cfg.http.tls_client_ca_file is not None
    try:
        try:
            conn.connect()  # TLS: the handshake, the server's certificate verified
        except ssl.SSLError as exc:
            reason = str(exc.reason or exc)
            if mutual and any(r in reason.upper() for r in _REFUSED_CLIENT_CERT):  # TLS 1.2
                return HealthResult(True, f"{target}: serving ({_REFUSED}: {reason})")
            return HealthResult(False, f"{target}: TLS failed: {reason}")
        except OSError as exc:
            return HealthResult(False, f"{target}: {exc.strerror or exc}")
        try:
            conn.request("GET", path)
            status = conn.getresponse().status
        except OSError as exc:  # ssl.SSLError, a reset, a close without an answer
            if mutual:  # TLS 1.3: the client CA is applied after the handshake
                return HealthResult(True, f"{target}: serving ({_REFUSED}: {exc})")
            return HealthResult(False, f"{target}: {exc}")
    finally:
        conn.close()
    if status != 200:
        return HealthResult(False, f"{target}: HTTP {status}")
    return HealthResult(True, f"{target}: 200")
