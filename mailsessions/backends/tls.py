"""TLS helpers shared by every backend: one way to build a client context and
one way to describe the negotiated connection."""

from __future__ import annotations

import ssl

from mailsessions.backends.base import TLSFailed, TLSInfo


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
