"""Exchange Web Services, through exchangelib.

Choices worth knowing:

* **Version.** With an explicit endpoint the version is pinned to
  ``Version(build=EXCHANGE_2016)`` so exchangelib does not spend round trips
  guessing it. Exchange corrects the pin itself: every response carries a
  ``ServerVersionInfo`` header and exchangelib stores what it says, which is
  what ``greeting`` reports after login. Servers older than 2013 SP1 would
  need the pin removed; they are out of support. With autodiscover the
  version comes from the autodiscover answer and exchangelib's own guessing.
* **Timeouts and TLS verification are per backend, not global.**
  exchangelib reads ``protocol.TIMEOUT`` and builds HTTP adapters from the
  protocol's class. We give every backend its own protocol instance (through
  credentials carrying a private token, which makes exchangelib's protocol
  cache key unique) of a small subclass, and set ``TIMEOUT`` on that instance.
  Nothing in exchangelib is mutated for other sessions in the same worker.
  Autodiscover itself runs with exchangelib's fixed timeouts (10 s a probe).
* **Flags.** exchangelib 5 has no flag field on messages; the flag is the
  MAPI property PidTagFlagStatus (0x1090: 2 flagged, 1 complete, absent not
  flagged). We register it once on ``Message`` as ``mailsessions_flag`` —
  exchangelib's documented way to add an extended property.
* **Delete is soft:** messages move to Deleted Items
  (``DeleteType=MoveToDeletedItems``), like Outlook's Delete; a person can
  still recover them. Deleting from Deleted Items removes them for good.
* **Search** is evaluated by Exchange: unread, From and Subject "contains",
  received-date range (whole days in UTC) and size become one restriction.
  "To contains" matches Exchange's DisplayTo (display names, or addresses for
  recipients without one) because EWS cannot filter on the recipient list.
  ``exclude_ids`` is applied while paging (EWS cannot filter on ids);
  ``min_uid`` is IMAP-only and ignored (incremental reads use exclude_ids).
"""

from __future__ import annotations

import datetime as dt
import email
import email.policy
import email.utils
import logging
import uuid
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import ClassVar

import requests
from exchangelib import (
    DELEGATE,
    UTC,
    Account,
    Configuration,
    Credentials,
    EWSDateTime,
    ExtendedProperty,
    FailFast,
    Message,
    Q,
    Version,
)
from exchangelib import errors as ews_errors
from exchangelib.items import MOVE_TO_DELETED_ITEMS
from exchangelib.properties import Mailbox
from exchangelib.protocol import NoVerifyHTTPAdapter, Protocol
from exchangelib.transport import AUTH_TYPE_MAP, BASIC
from exchangelib.version import EXCHANGE_2016

from mailsessions.backends.base import (
    FEATURE_COPY,
    FEATURE_DELETE,
    FEATURE_FLAGS,
    FEATURE_FOLDERS,
    FEATURE_MOVE,
    AuthenticationFailed,
    BackendError,
    ConnectionFailed,
    FetchedMessage,
    Flag,
    FolderInfo,
    FolderNotFound,
    IncomingBackend,
    NotSupported,
    OutgoingBackend,
    ProtocolError,
    SearchCriteria,
    SendResult,
    TemporaryFailure,
    TLSFailed,
)

log = logging.getLogger(__name__)

FLAG_FIELD = "mailsessions_flag"
FLAG_FLAGGED = 2  # PidTagFlagStatus values; 1 ("complete") reads as not flagged


class _FlagStatus(ExtendedProperty):
    """PidTagFlagStatus: the follow-up flag Outlook shows."""

    property_tag = 0x1090
    property_type = "Integer"


def _register_flag_field() -> None:
    # Registering is process-wide and must happen once; a second import (tests,
    # autoreload) must not raise "already registered".
    if FLAG_FIELD not in {f.name for f in Message.FIELDS}:
        Message.register(FLAG_FIELD, _FlagStatus)


_register_flag_field()


class _SessionCredentials(Credentials):
    """Credentials with a per-backend token.

    exchangelib caches one Protocol per (endpoint, credentials) for the whole
    process. The token makes the key unique, so this backend's timeout and TLS
    choice stay its own, and ``close()`` can drop its entry (and the password
    it holds) from the cache.
    """

    def __init__(self, username: str, password: str) -> None:
        super().__init__(username=username, password=password)
        self.backend_token = uuid.uuid4().hex

    def __repr__(self) -> str:  # exchangelib's repr would show the password
        return f"{type(self).__name__}({self.username!r}, ********)"

    __str__ = __repr__


class _VerifyingProtocol(Protocol):
    """The default: requests verifies certificates against certifi's bundle."""


class _NoVerifyProtocol(Protocol):
    """For sessions that explicitly turned certificate verification off."""

    HTTP_ADAPTER_CLS = NoVerifyHTTPAdapter


# exchangelib errors that mean "try again later".
_TEMPORARY = (
    ews_errors.ErrorServerBusy,
    ews_errors.ErrorInternalServerTransientError,
    ews_errors.ErrorMailboxStoreUnavailable,
    ews_errors.ErrorMailboxMoveInProgress,
    ews_errors.ErrorTooManyObjectsOpened,
    ews_errors.ErrorConnectionFailed,
    ews_errors.RateLimitError,
    ews_errors.CASError,
)
_FOLDER_MISSING = (
    ews_errors.ErrorFolderNotFound,
    ews_errors.ErrorNoPublicFolderReplicaAvailable,
)
_NO_ACCESS = (
    ews_errors.ErrorAccessDenied,
    ews_errors.ErrorNonExistentMailbox,
    ews_errors.ErrorMailboxLogonFailed,
    ews_errors.ErrorImpersonateUserDenied,
    ews_errors.ErrorAccountDisabled,
)


class EWSBackend(IncomingBackend, OutgoingBackend):
    """One Exchange mailbox over EWS: read, search, flag, move, copy, delete, send."""

    protocol = "ews"
    features: ClassVar[frozenset[str]] = frozenset(
        {FEATURE_FOLDERS, FEATURE_FLAGS, FEATURE_MOVE, FEATURE_COPY, FEATURE_DELETE}
    )
    batch_size = 100  # GetItem with MIME content: Exchange throttles big batches

    def __init__(self, config) -> None:
        super().__init__(config)
        self.account: Account | None = None
        self._credentials: _SessionCredentials | None = None

    # --- lifecycle ---------------------------------------------------------

    def _where(self) -> str:
        return self.config.ews_endpoint or f"autodiscover for {self.config.email_address}"

    def _auth_type(self) -> str:
        wanted = (self.config.ews_auth_type or BASIC).strip()
        for name in AUTH_TYPE_MAP:
            if name.lower() == wanted.lower():
                return name
        known = ", ".join(sorted(AUTH_TYPE_MAP))
        raise NotSupported(f"unknown Exchange authentication type {wanted!r} (known: {known})")

    def connect(self) -> None:
        """Build the exchangelib Account. Sends nothing with an explicit
        endpoint; runs autodiscover (several HTTP and DNS probes) without one."""
        address = self.config.email_address or self.config.username
        if "@" not in address:
            raise NotSupported(
                "Exchange needs the mailbox's e-mail address (e.g. alice@example.org)"
            )
        auth_type = self._auth_type()
        self._credentials = _SessionCredentials(self.config.username, self.config.password)
        with self._translate():
            if self.config.ews_endpoint:
                config = Configuration(
                    service_endpoint=self.config.ews_endpoint,
                    credentials=self._credentials,
                    auth_type=auth_type,
                    version=Version(build=EXCHANGE_2016),
                    retry_policy=FailFast(),
                )
                # Create our protocol first: exchangelib's cache hands this
                # instance to the Account below (see _SessionCredentials).
                protocol_cls = (
                    _VerifyingProtocol if self.config.verify_certificate else _NoVerifyProtocol
                )
                protocol_cls(config=config)
                self.account = Account(
                    address, config=config, autodiscover=False, access_type=DELEGATE
                )
            else:
                config = Configuration(
                    credentials=self._credentials, auth_type=auth_type, retry_policy=FailFast()
                )
                self.account = Account(
                    address,
                    config=config,
                    credentials=self._credentials,
                    autodiscover=True,
                    access_type=DELEGATE,
                )
        self.account.protocol.TIMEOUT = self.config.timeout  # instance attribute: this backend only
        self.greeting = f"Exchange Web Services at {self.account.protocol.service_endpoint}"
        self.capabilities = (
            f"auth={auth_type}",
            f"endpoint={self.account.protocol.service_endpoint}",
        )

    def login(self) -> None:
        """Read the inbox folder: the cheapest call that proves the password
        and the right to open the mailbox."""
        account = self._account()
        with self._translate():
            account.inbox  # noqa: B018 - a GetFolder round trip
        version = account.version
        self.greeting = f"{version.fullname} (build {version.build}, API {version.api_version})"

    def close(self) -> None:
        account, self.account = self.account, None
        if account is None:
            return
        try:
            account.protocol.close()
            del Protocol[account.protocol.config]  # drop the cached entry and its password
        except Exception:  # close() never raises
            log.debug("closing the EWS protocol failed", exc_info=True)

    def _account(self) -> Account:
        if self.account is None:
            raise ProtocolError("not connected to Exchange: call open() first")
        return self.account

    # --- error translation -------------------------------------------------

    @contextmanager
    def _translate(self, *, folder: str = ""):
        try:
            yield
        except BackendError:
            raise
        except ews_errors.UnauthorizedError as exc:
            if "locked out" in str(exc):
                raise AuthenticationFailed(
                    f"the account of user {self.config.username} is locked out on Exchange"
                ) from None
            raise AuthenticationFailed(
                f"authentication failed for user {self.config.username}"
            ) from None
        except _NO_ACCESS as exc:
            raise AuthenticationFailed(
                f"user {self.config.username} may not open the mailbox "
                f"{self.config.email_address} ({type(exc).__name__})"
            ) from None
        except _FOLDER_MISSING:
            raise FolderNotFound(f"folder {folder or '?'} does not exist on Exchange") from None
        except ews_errors.ErrorTimeoutExpired as exc:
            # exchangelib re-raises every connection error as this one; the
            # original requests exception is its context.
            raise self._connection_error(exc.__context__ or exc) from None
        except ews_errors.RedirectError as exc:
            raise ProtocolError(
                f"Exchange redirected the request to {exc.url}: use that as the EWS endpoint"
            ) from None
        except ews_errors.AutoDiscoverFailed:
            raise ConnectionFailed(
                f"autodiscover found no Exchange server for {self.config.email_address}: "
                "enter the EWS endpoint URL (https://<server>/EWS/Exchange.asmx) instead",
                retryable=False,
            ) from None
        except _TEMPORARY as exc:
            raise TemporaryFailure(
                f"Exchange at {self._where()} is busy or unavailable ({type(exc).__name__}); "
                "try again later"
            ) from None
        except ews_errors.TransportError as exc:
            text = str(exc)
            if "CERTIFICATE_VERIFY_FAILED" in text or "certificate verify failed" in text:
                raise self._tls_error(text) from None
            if "SSL" in text or "TLS" in text:
                raise TLSFailed(f"TLS with {self._where()} failed ({text[:200]})") from None
            if isinstance(exc, ews_errors.ResponseMessageError):
                raise ProtocolError(
                    f"Exchange refused the request: {type(exc).__name__}: {text}"
                ) from None
            raise ProtocolError(
                f"Exchange at {self._where()} answered something unexpected: {text[:300]}"
            ) from None
        except ews_errors.EWSError as exc:
            raise ProtocolError(f"Exchange reported {type(exc).__name__}: {exc}") from None
        except (requests.exceptions.RequestException, OSError) as exc:
            raise self._connection_error(exc) from None

    def _connection_error(self, exc: BaseException) -> BackendError:
        where = self._where()
        if isinstance(exc, requests.exceptions.SSLError):
            return self._tls_error(str(exc))
        if isinstance(exc, requests.exceptions.Timeout | TimeoutError):
            return ConnectionFailed(f"{where} did not answer within {self.config.timeout:g} s")
        text = str(exc)
        if "Connection refused" in text or isinstance(exc, ConnectionRefusedError):
            return ConnectionFailed(
                f"connection to {where} refused: nothing listens there, or a firewall rejects it"
            )
        if (
            "Name or service not known" in text
            or "Failed to resolve" in text
            or "getaddrinfo" in text
        ):
            return ConnectionFailed(f"the server name in {where} cannot be resolved (DNS)")
        return ConnectionFailed(f"connection to {where} failed ({type(exc).__name__})")

    def _tls_error(self, text: str) -> TLSFailed:
        if "self-signed" in text or "self signed" in text:
            return TLSFailed(
                f"the certificate of {self._where()} is self-signed: install a trusted certificate "
                "on the server, or turn off certificate verification for this session if you "
                "trust this network"
            )
        if "hostname" in text.lower() or "doesn't match" in text:
            return TLSFailed(f"the certificate is not valid for the name in {self._where()}")
        if "expired" in text:
            return TLSFailed(f"the certificate of {self._where()} has expired")
        return TLSFailed(f"the certificate of {self._where()} could not be verified")

    # --- folders -----------------------------------------------------------

    def _folder(self, path: str, *, create: bool = False):
        """A folder by its path under the message folder root ("Inbox/Sub")."""
        account = self._account()
        parts = [p for p in path.strip("/").split("/") if p]
        if not parts:
            raise FolderNotFound("an empty folder name was given")
        with self._translate(folder=path):
            current = account.msg_folder_root
            for i, part in enumerate(parts):
                children = {c.name.lower(): c for c in current.children}
                found = children.get(part.lower())
                if found is None and i == 0 and part.lower() == "inbox":
                    found = account.inbox  # IMAP habit: "INBOX" means the inbox, whatever its name
                if found is None:
                    if not create:
                        raise FolderNotFound(f"folder {path} does not exist on Exchange")
                    found = type(current)(parent=current, name=part)
                    found.save()  # CreateFolder
                current = found
            return current

    def list_folders(self) -> list[str]:
        """Mail folders under the message folder root, as "Inbox/Sub" paths.

        Calendar, Contacts, Tasks and other non-mail folders are left out.
        """
        account = self._account()
        with self._translate():
            top = account.msg_folder_root
            paths = []
            for f in top.walk():
                if f.folder_class and not f.folder_class.startswith("IPF.Note"):
                    continue
                parts = []
                node = f
                while node is not None and node.id != top.id:
                    parts.append(node.name)
                    node = node.parent
                paths.append("/".join(reversed(parts)))
        return sorted(paths)

    def folder_info(self, folder: str) -> FolderInfo:
        f = self._folder(folder)
        with self._translate(folder=folder):
            f.refresh()  # GetFolder: counts from the cached hierarchy may be stale
        return FolderInfo(
            name=folder, message_count=f.total_count or 0, unseen_count=f.unread_count
        )

    # --- search and fetch ----------------------------------------------------

    @staticmethod
    def _day_start(day: dt.date) -> EWSDateTime:
        return EWSDateTime(day.year, day.month, day.day, tzinfo=UTC)

    def _query(self, criteria: SearchCriteria) -> Q:
        q = Q()
        if criteria.unseen_only:
            q &= Q(is_read=False)
        if criteria.from_contains:
            q &= Q(author__icontains=criteria.from_contains)
        if criteria.to_contains:
            q &= Q(display_to__icontains=criteria.to_contains)
        if criteria.subject_contains:
            q &= Q(subject__icontains=criteria.subject_contains)
        if criteria.since is not None:
            q &= Q(datetime_received__gte=self._day_start(criteria.since))
        if criteria.before is not None:
            q &= Q(datetime_received__lt=self._day_start(criteria.before))
        if criteria.larger_than is not None:
            q &= Q(size__gt=criteria.larger_than)
        return q

    def search(
        self,
        folder: str,
        criteria: SearchCriteria,
        *,
        newest_first: bool = False,
        limit: int | None = None,
    ) -> list[str]:
        """Item ids matching ``criteria``; FindItem pages through the folder."""
        f = self._folder(folder)
        order = "-datetime_received" if newest_first else "datetime_received"
        ids: list[str] = []
        with self._translate(folder=folder):
            qs = f.filter(self._query(criteria)).order_by(order).values_list("id", flat=True)
            if limit is not None and not criteria.exclude_ids:
                qs.page_size = max(1, min(limit, 1000))
            for item_id in qs:
                if isinstance(item_id, Exception):
                    raise item_id
                if item_id in criteria.exclude_ids:
                    continue
                ids.append(item_id)
                if limit is not None and len(ids) >= limit:
                    break
        return ids

    def fetch(self, folder: str, ids: Sequence[str]) -> Iterator[FetchedMessage]:
        """GetItem with MIME content, ``batch_size`` ids per request."""
        account = self._account()
        only = ["mime_content", "is_read", FLAG_FIELD, "size", "datetime_received"]
        for start in range(0, len(ids), self.batch_size):
            chunk = ids[start : start + self.batch_size]
            with self._translate(folder=folder):
                items = list(
                    account.fetch(
                        [(i, None) for i in chunk], only_fields=only, chunk_size=self.batch_size
                    )
                )
            for item in items:
                if isinstance(item, ews_errors.ErrorItemNotFound):
                    continue  # vanished meanwhile
                if isinstance(item, Exception):
                    with self._translate(folder=folder):
                        raise item
                flags = set()
                if item.is_read:
                    flags.add(Flag.SEEN)
                if getattr(item, FLAG_FIELD) == FLAG_FLAGGED:
                    flags.add(Flag.FLAGGED)
                raw = item.mime_content or b""
                if isinstance(raw, str):
                    raw = raw.encode()
                yield FetchedMessage(
                    server_id=item.id,
                    raw=raw,
                    folder=folder,
                    flags=frozenset(flags),
                    size=item.size or len(raw),
                    internal_date=item.datetime_received,
                    extra={"changekey": item.changekey},
                )

    # --- changes -------------------------------------------------------------

    def _count_ok(self, results: Iterable, folder: str) -> int:
        done = 0
        for r in results:
            if isinstance(r, ews_errors.ErrorItemNotFound):
                continue
            if isinstance(r, Exception):
                with self._translate(folder=folder):
                    raise r
            done += 1
        return done

    def set_flags(
        self,
        folder: str,
        ids: Sequence[str],
        *,
        add: Iterable[Flag] = (),
        remove: Iterable[Flag] = (),
    ) -> int:
        """UpdateItem on is_read and the flag-status property, batched."""
        account = self._account()
        add, remove = set(add), set(remove)
        if add & remove:
            raise ValueError(f"flags both added and removed: {sorted(add & remove)}")
        values: dict[str, object] = {}
        if Flag.SEEN in add or Flag.SEEN in remove:
            values["is_read"] = Flag.SEEN in add
        if Flag.FLAGGED in add or Flag.FLAGGED in remove:
            values[FLAG_FIELD] = FLAG_FLAGGED if Flag.FLAGGED in add else None
        if not values or not ids:
            return 0
        changes = [(Message(account=account, id=i, **values), list(values)) for i in ids]
        with self._translate(folder=folder):
            results = account.bulk_update(changes, chunk_size=self.batch_size)
        return self._count_ok(results, folder)

    def _stubs(self, ids: Sequence[str]) -> list[tuple[str, None]]:
        return [(i, None) for i in ids]

    def move(self, folder: str, ids: Sequence[str], target: str, *, create: bool = False) -> int:
        account = self._account()
        to_folder = self._folder(target, create=create)
        if not ids:
            return 0
        with self._translate(folder=target):
            results = account.bulk_move(self._stubs(ids), to_folder, chunk_size=self.batch_size)
        return self._count_ok(results, folder)

    def copy(self, folder: str, ids: Sequence[str], target: str, *, create: bool = False) -> int:
        account = self._account()
        to_folder = self._folder(target, create=create)
        if not ids:
            return 0
        with self._translate(folder=target):
            results = account.bulk_copy(self._stubs(ids), to_folder, chunk_size=self.batch_size)
        return self._count_ok(results, folder)

    def delete(self, folder: str, ids: Sequence[str]) -> int:
        """Soft delete: move to Deleted Items (see the module docstring)."""
        account = self._account()
        if not ids:
            return 0
        with self._translate(folder=folder):
            results = account.bulk_delete(
                self._stubs(ids), delete_type=MOVE_TO_DELETED_ITEMS, chunk_size=self.batch_size
            )
        return self._count_ok(results, folder)

    # --- sending -------------------------------------------------------------

    def send(self, message: bytes, *, sender: str, recipients: Sequence[str]) -> SendResult:
        """Send through Exchange and keep a copy in Sent Items.

        Exchange sends as the mailbox owner; ``sender`` must be an address it
        may send as. Envelope recipients that are not in the To/Cc headers go
        as Bcc, like an SMTP envelope.
        """
        account = self._account()
        if not recipients:
            raise ProtocolError("no recipients given")
        parsed = email.message_from_bytes(message, policy=email.policy.default)

        def header_addresses(name: str) -> set[str]:
            values = [str(v) for v in parsed.get_all(name, [])]
            return {a.lower() for _, a in email.utils.getaddresses(values) if a}

        to_hdr, cc_hdr = header_addresses("To"), header_addresses("Cc")
        to, cc, bcc = [], [], []
        for r in recipients:
            (to if r.lower() in to_hdr else cc if r.lower() in cc_hdr else bcc).append(
                Mailbox(email_address=r)
            )
        with self._translate():
            Message(
                account=account,
                folder=account.sent,
                mime_content=message,
                to_recipients=to or None,
                cc_recipients=cc or None,
                bcc_recipients=bcc or None,
            ).send_and_save()
        return SendResult(
            accepted=tuple(recipients),
            refused={},
            reply="Exchange accepted the message (CreateItem, SendAndSaveCopy)",
        )
