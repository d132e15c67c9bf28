"""Which hosts and ports the app may connect to.

Connection tests and operations connect wherever a user points them, so the
installation decides what is reachable: allow and deny lists (host names,
IP addresses or CIDR networks), blocking of private ranges, loopback and a
port list. Checked against every address a name resolves to, so a public
name that resolves to an internal address is caught too.
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass

from django.conf import settings

from mailsessions.backends.base import BackendError


class TargetNotAllowed(BackendError):
    """The installation's policy forbids this host or port (never retried)."""


@dataclass(frozen=True)
class TargetPolicy:
    allowed: tuple[str, ...] = ()
    denied: tuple[str, ...] = ()
    block_private: bool = False
    allow_loopback: bool = True
    ports: tuple[int, ...] = ()

    @classmethod
    def from_settings(cls) -> TargetPolicy:
        return cls(
            allowed=tuple(settings.MAILSESSIONS_ALLOWED_HOSTS),
            denied=tuple(settings.MAILSESSIONS_DENIED_HOSTS),
            block_private=settings.MAILSESSIONS_BLOCK_PRIVATE_NETWORKS,
            allow_loopback=settings.MAILSESSIONS_ALLOW_LOOPBACK,
            ports=tuple(settings.MAILSESSIONS_ALLOWED_PORTS),
        )

    def check(self, host: str, port: int, addresses: list[str]) -> None:
        """Raise TargetNotAllowed with the reason, or return."""
        if self.ports and port not in self.ports:
            raise TargetNotAllowed(
                f"port {port} is not allowed by this installation (allowed: "
                f"{', '.join(map(str, self.ports))})"
            )
        name = host.lower().rstrip(".").strip("[]")
        if _matches(name, addresses, self.denied):
            raise TargetNotAllowed(f"{host} is on this installation's deny list")
        explicitly_allowed = _matches(name, addresses, self.allowed)
        if self.allowed and not explicitly_allowed:
            raise TargetNotAllowed(f"{host} is not on this installation's allow list")
        if explicitly_allowed:
            return
        for address in addresses:
            ip = ipaddress.ip_address(address.split("%")[0])
            if ip.is_loopback:
                if not self.allow_loopback:
                    raise TargetNotAllowed(
                        f"{host} resolves to the loopback address {ip}, which is not allowed here"
                    )
                continue
            if ip.is_unspecified or ip.is_multicast or ip.is_reserved or ip.is_link_local:
                raise TargetNotAllowed(f"{host} resolves to {ip}, which cannot be a mail server")
            if self.block_private and ip.is_private:
                raise TargetNotAllowed(
                    f"{host} resolves to the private address {ip}; this installation "
                    "blocks private networks"
                )


def _matches(name: str, addresses: list[str], entries: tuple[str, ...]) -> bool:
    for entry in entries:
        entry = entry.lower().strip()
        try:
            network = ipaddress.ip_network(entry, strict=False)
        except ValueError:
            if name == entry or (entry.startswith(".") and name.endswith(entry)):
                return True
            continue
        for address in addresses:
            if ipaddress.ip_address(address.split("%")[0]) in network:
                return True
    return False


def ensure_allowed(host: str, port: int, policy: TargetPolicy | None = None) -> None:
    """Resolve ``host`` and check every address; raise TargetNotAllowed or return.

    Operations call this before connecting, so that a saved session cannot
    reach what a connection test could not.
    """
    try:
        infos = socket.getaddrinfo(host.strip("[]"), port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError):
        return  # the backend reports the unresolvable name in its own words
    addresses = list(dict.fromkeys(info[4][0] for info in infos))
    (policy or TargetPolicy.from_settings()).check(host, port, addresses)
