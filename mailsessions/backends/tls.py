"""Network and TLS helpers shared by the backends: one way to build a client
context, to describe the negotiated connection, and to explain socket and TLS
failures."""

from __future__ import annotations

import socket
import ssl

from mailsessions.backends.base import BackendError, ConnectionFailed, Security, TLSFailed, TLSInfo


def client_context(verify: bool) -> ssl.SSLContext:
    """The system trust store with hostname checks, or nothing checked at all."""
    context = ssl.create_default_context()
    if not verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def _name(parts) -> str:
    return ", ".join(f"{k}={v}" for rdn in parts or () for (k, v) in rdn)


def describe(sock: ssl.SSLSocket, verified: bool) -> TLSInfo:
    """Read version, cipher and certificate details off a connected TLS socket.

    With verification off ``getpeercert()`` returns nothing parsed, so the DER
    form is decoded with ``cryptography`` instead.
    """
    cert = sock.getpeercert()
    subject = issuer = not_after = ""
    if cert:
        subject = _name(cert.get("subject")).replace("commonName", "CN")
        issuer = _name(cert.get("issuer")).replace("commonName", "CN")
        not_after = cert.get("notAfter", "")
    else:
        der = sock.getpeercert(binary_form=True)
        if der:
            from cryptography import x509

            parsed = x509.load_der_x509_certificate(der)
            subject = parsed.subject.rfc4514_string()
            issuer = parsed.issuer.rfc4514_string()
            not_after = parsed.not_valid_after_utc.strftime("%b %d %H:%M:%S %Y GMT")
    cipher = sock.cipher()
    return TLSInfo(
        version=sock.version() or "",
        cipher=cipher[0] if cipher else "",
        subject=subject,
        issuer=issuer,
        not_after=not_after,
        verified=verified,
    )


def explain_ssl_error(exc: ssl.SSLError, host: str, port: int) -> TLSFailed:
    """Turn an ``ssl`` exception into advice a person can follow."""
    text = str(exc)
    if isinstance(exc, ssl.SSLCertVerificationError):
        reason = exc.verify_message or text
        if "self-signed" in reason or "self signed" in reason:
            advice = (
                f"the certificate of {host} is self-signed: install a trusted "
                "certificate on the server, or turn off certificate verification "
                "for this session if you trust this network"
            )
        elif (
            "Hostname mismatch" in reason
            or "doesn't match" in reason
            or "IP address mismatch" in reason
        ):
            advice = f"the certificate is not valid for the name {host}: use the name the certificate was issued for"
        elif "expired" in reason:
            advice = f"the certificate of {host} has expired"
        else:
            advice = f"the certificate of {host} could not be verified ({reason})"
        return TLSFailed(advice)
    if (
        "WRONG_VERSION_NUMBER" in text
        or "wrong version number" in text
        or "record layer failure" in text
    ):
        return TLSFailed(
            f"port {port} on {host} does not speak TLS right away: it probably expects "
            "STARTTLS (or no encryption); choose STARTTLS"
        )
    return TLSFailed(f"TLS handshake with {host}:{port} failed ({exc.reason or text})")


def explain_os_error(
    exc: OSError, host: str, port: int, timeout: float, *, connecting: bool, security: Security
) -> ConnectionFailed:
    """A socket-level failure as a sentence (IMAP and POP3)."""
    if isinstance(exc, socket.gaierror):
        return ConnectionFailed(
            f"the name {host} does not resolve (check the server name, or the DNS of this machine)"
        )
    if isinstance(exc, ConnectionRefusedError):
        return ConnectionFailed(
            f"connection refused by {host}:{port}: nothing listens on that port, or a "
            "firewall rejects it"
        )
    if isinstance(exc, TimeoutError):
        if connecting and security != Security.SSL:
            return ConnectionFailed(
                f"nothing answers on port {port} of {host} within {timeout:g} s "
                "(if that port expects TLS from the first byte, like 993 or 995, "
                "choose SSL)"
            )
        if connecting:
            return ConnectionFailed(
                f"nothing answers on port {port} of {host} within {timeout:g} s"
            )
        return ConnectionFailed(f"{host} stopped answering for {timeout:g} s")
    if isinstance(exc, (ConnectionResetError, BrokenPipeError, ConnectionAbortedError, EOFError)):
        return ConnectionFailed(f"the server {host}:{port} closed the connection")
    reason = exc.strerror or str(exc) or type(exc).__name__
    return ConnectionFailed(f"could not talk to {host}:{port} ({reason})")


def ssl_error(exc: ssl.SSLError, host: str, port: int, *, connecting: bool) -> BackendError:
    """A TLS-layer error: a handshake problem, or (once talking) a dropped link."""
    if not connecting and isinstance(exc, (ssl.SSLEOFError, ssl.SSLZeroReturnError)):
        return ConnectionFailed(f"the server {host}:{port} closed the connection")
    return explain_ssl_error(exc, host, port)
