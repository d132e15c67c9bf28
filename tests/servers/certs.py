"""A self-signed certificate for the loopback test servers, made once per run
by the same code the demo mail server uses."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from mailsessions.demo import make_self_signed as _make


@dataclass(frozen=True)
class CertPair:
    cert: Path
    key: Path


def make_self_signed(directory: Path) -> CertPair:
    """A certificate for localhost and 127.0.0.1, valid for 30 days."""
    directory.mkdir(parents=True, exist_ok=True)
    pair = CertPair(cert=directory / "cert.pem", key=directory / "key.pem")
    _make(pair.cert, pair.key, days=30)
    return pair
