"""The contract every mail backend follows.

A backend speaks one protocol (IMAP, POP3, Exchange/EWS, SMTP) to one server.
It is a context manager like Django's mail backends: ``open()`` connects and
authenticates, ``close()`` always releases the connection, and ``__enter__``
closes again when ``open()`` fails.

Backends never let a library, socket or TLS exception escape: they translate
each into a :class:`BackendError` subclass carrying a message a person can act
on and whether retrying could help. They never put a password into a message,
a log line or a ``repr``.

Backends know nothing about Django models: they take a :class:`ServerConfig`,
which the services build from a saved session (or from unsaved wizard data)
at the moment of use.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from types import TracebackType
from typing import ClassVar


class Security(StrEnum):
    SSL = "ssl"  # implicit TLS from the first byte (IMAPS 993, POP3S 995, SMTPS 465)
    STARTTLS = "starttls"  # plain connect, then upgrade (IMAP STARTTLS, POP3 STLS, SMTP)
    NONE = "none"  # plaintext; only when the session explicitly opted in


class Flag(StrEnum):
    """Our flag vocabulary; backends map it to the protocol's own."""

    SEEN = "seen"
    FLAGGED = "flagged"


@dataclass(frozen=True)
class ServerConfig:
    host: str
    port: int
    security: Security
    username: str = ""
    password: str = field(default="", repr=False)
    verify_certificate: bool = True
    timeout: float = 15.0
    # Exchange only: an explicit EWS endpoint URL (empty means autodiscover),
    # the auth type ("NTLM", "basic", ...) and the mailbox's primary address.
    ews_endpoint: str = ""
    ews_auth_type: str = "NTLM"
    email_address: str = ""

    def describe(self) -> str:
        return f"{self.host}:{self.port} ({self.security})"


# --- errors ---------------------------------------------------------------


class BackendError(Exception):
    """A failure talking to a mail server, explained for a person.

    ``retryable`` says whether trying again later could succeed (timeouts,
    dropped connections, temporary server replies) or not (bad password,
    missing folder, refused certificate).
    """

    retryable: ClassVar[bool] = False

    def __init__(self, message: str, *, retryable: bool | None = None) -> None:
        super().__init__(message)
        self.message = message
        if retryable is not None:
            self.retryable = retryable  # type: ignore[misc]

    def __str__(self) -> str:
        return self.message


class ConnectionFailed(BackendError):
    """DNS, TCP, timeouts, dropped connections."""

    retryable = True


class TLSFailed(BackendError):
    """TLS handshake or certificate verification failed."""


class AuthenticationFailed(BackendError):
    """The server refused the credentials."""


class FolderNotFound(BackendError):
    """The folder does not exist on the server."""


class NotSupported(BackendError):
    """The protocol or server cannot do what was asked (e.g. POP3 move)."""


class ProtocolError(BackendError):
    """The server answered something unexpected or refused a command."""


class TemporaryFailure(BackendError):
    """The server said try again later (IMAP [UNAVAILABLE], SMTP 4xx, ...)."""

    retryable = True


# --- data -----------------------------------------------------------------


@dataclass(frozen=True)
class TLSInfo:
    version: str  # e.g. "TLSv1.3"
    cipher: str
    subject: str  # e.g. "CN=mail.example.org"
    issuer: str
    not_after: str  # as the certificate says, e.g. "Dec 26 12:00:00 2026 GMT"
    verified: bool  # False when the session turned verification off


@dataclass(frozen=True)
class FolderInfo:
    name: str
    message_count: int
    unseen_count: int | None = None
    uidvalidity: int | None = None  # IMAP only
    uidnext: int | None = None  # IMAP only


@dataclass(frozen=True)
class SearchCriteria:
    """Which messages to select. Empty/None fields do not restrict."""

    unseen_only: bool = False
    from_contains: str = ""
    to_contains: str = ""
    subject_contains: str = ""
    since: dt.date | None = None  # on or after this date
    before: dt.date | None = None  # strictly before this date
    larger_than: int | None = None  # bytes
    # Incremental reads: only ids the caller has not stored yet. For IMAP this
    # is "UID greater than" within the same UIDVALIDITY.
    min_uid: int | None = None
    exclude_ids: frozenset[str] = frozenset()


@dataclass
class FetchedMessage:
    """One message as it came from the server.

    ``server_id`` identifies it within its folder: the IMAP UID (as text), the
    POP3 UIDL or the EWS item id. ``uidvalidity`` is set by IMAP only.
    """

    server_id: str
    raw: bytes
    folder: str
    flags: frozenset[Flag] = frozenset()
    size: int = 0
    uidvalidity: int | None = None
    internal_date: dt.datetime | None = None
    extra: dict = field(default_factory=dict)  # protocol-specific (e.g. EWS changekey)


@dataclass(frozen=True)
class SendResult:
    """What the SMTP server said. ``refused`` maps recipient -> reason."""

    accepted: tuple[str, ...]
    refused: dict[str, str]
    reply: str  # the server's final reply line, e.g. "250 2.0.0 Ok: queued as ..."


# --- backends -------------------------------------------------------------


class Backend:
    """Shared lifecycle: a context manager around ``open()``/``close()``."""

    protocol: ClassVar[str]

    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self.greeting: str = ""
        self.capabilities: tuple[str, ...] = ()
        self.tls: TLSInfo | None = None

    def connect(self) -> None:
        """Open the connection, read the greeting, upgrade with STARTTLS if asked.

        Sets ``greeting``, ``capabilities`` and ``tls``.
        """
        raise NotImplementedError

    def login(self) -> None:
        """Authenticate with the configured credentials."""
        raise NotImplementedError

    def open(self) -> None:
        self.connect()
        self.login()

    def close(self) -> None:
        """Release the connection. Never raises."""
        raise NotImplementedError

    def __enter__(self):
        try:
            self.open()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.config.describe()} user={self.config.username!r}>"


class IncomingBackend(Backend):
    """Reads and changes mail in a mailbox (IMAP, POP3, EWS).

    ``features`` lists what the protocol can do beyond reading; services check
    it and refuse an operation with a clear error instead of a silent no-op.
    """

    features: ClassVar[frozenset[str]] = frozenset()  # of FEATURE_* below
    # How many messages one fetch round trip asks for.
    batch_size: int = 300

    def list_folders(self) -> list[str]:
        raise NotImplementedError

    def folder_info(self, folder: str) -> FolderInfo:
        """Select/examine the folder; raises FolderNotFound."""
        raise NotImplementedError

    def search(
        self,
        folder: str,
        criteria: SearchCriteria,
        *,
        newest_first: bool = False,
        limit: int | None = None,
    ) -> list[str]:
        """Server ids matching ``criteria``, oldest first unless ``newest_first``."""
        raise NotImplementedError

    def fetch(self, folder: str, ids: Sequence[str]) -> Iterator[FetchedMessage]:
        """Yield the messages, fetching ``batch_size`` per round trip.

        Messages that vanished on the server meanwhile are skipped.
        """
        raise NotImplementedError

    def set_flags(
        self,
        folder: str,
        ids: Sequence[str],
        *,
        add: Iterable[Flag] = (),
        remove: Iterable[Flag] = (),
    ) -> int:
        """Returns how many messages were changed."""
        raise NotSupported(f"{self.protocol} cannot set flags")

    def move(self, folder: str, ids: Sequence[str], target: str, *, create: bool = False) -> int:
        raise NotSupported(f"{self.protocol} cannot move messages")

    def copy(self, folder: str, ids: Sequence[str], target: str, *, create: bool = False) -> int:
        raise NotSupported(f"{self.protocol} cannot copy messages")

    def delete(self, folder: str, ids: Sequence[str]) -> int:
        raise NotSupported(f"{self.protocol} cannot delete messages")


FEATURE_FOLDERS = "folders"
FEATURE_FLAGS = "flags"
FEATURE_MOVE = "move"
FEATURE_COPY = "copy"
FEATURE_DELETE = "delete"


class OutgoingBackend(Backend):
    """Sends mail (SMTP, EWS). One open connection sends many messages."""

    def login(self) -> None:
        """Authenticate unless the config has no username (no-auth relays)."""
        raise NotImplementedError

    def send(self, message: bytes, *, sender: str, recipients: Sequence[str]) -> SendResult:
        """Send one already-built RFC 5322 message.

        Raises BackendError when nothing was accepted; returns the refused
        recipients when only some were.
        """
        raise NotImplementedError
