"""The client's TLS context: the system's trust store, a CA file, or no verification."""

from __future__ import annotations

import ssl


def client_context(ca_file: str | None, insecure: bool) -> ssl.SSLContext:
    """A context verifying the server against `ca_file` (or the system's CAs), or, with
    `insecure`, accepting any certificate. Raises ValueError naming a CA file it cannot use."""
    try:
        context = ssl.create_default_context(cafile=ca_file)
    except FileNotFoundError:
        raise ValueError(f"--ca {ca_file}: no such file") from None
    except ssl.SSLError as exc:
        raise ValueError(f"--ca {ca_file}: not a PEM certificate file ({exc.reason})") from None
    if insecure:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context
