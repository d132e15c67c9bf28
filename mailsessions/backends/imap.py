"""IMAP through imapclient.

Server ids are UIDs (as text); they stay valid for as long as the folder's
UIDVALIDITY does, which ``fetch`` reports with every message. Reads use
EXAMINE and ``BODY.PEEK[]`` so that reading never marks mail as seen.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import re
import ssl
from collections.abc import Iterable, Iterator, Sequence
from typing import ClassVar

from imapclient import IMAPClient
from imapclient.exceptions import (
    CapabilityError,
    IMAPClientAbortError,
    IMAPClientError,
    LoginError,
)

from mailsessions.backends import tls
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
    ProtocolError,
    SearchCriteria,
    Security,
    TemporaryFailure,
    TLSFailed,
)

FLAG_TO_IMAP: dict[Flag, bytes] = {Flag.SEEN: b"\\Seen", Flag.FLAGGED: b"\\Flagged"}
IMAP_TO_FLAG: dict[bytes, Flag] = {v.lower(): k for k, v in FLAG_TO_IMAP.items()}

# Response codes (RFC 5530) that mean "not now" rather than "never".
TEMPORARY_CODES = ("[UNAVAILABLE]", "[INUSE]", "[LIMIT]", "[SERVERBUG]", "[OVERQUOTA]")
AUTH_CODES = ("[AUTHENTICATIONFAILED]", "[AUTHORIZATIONFAILED]", "[EXPIRED]")
_TIMING = re.compile(r"\s*\(\d+\.\d+ \+ \d+\.\d+( \+ \d+\.\d+)? secs\)\.?")


def _server_text(exc: BaseException) -> str:
    """The server's own words from an imaplib error, without b'' or timings."""
    text = str(exc)
    text = re.sub(r"b'(.*?)'", r"\1", text)
    text = re.sub(r'b"(.*?)"', r"\1", text)
    return _TIMING.sub("", text).strip()


class IMAPBackend(IncomingBackend):
    protocol: ClassVar[str] = "imap"
    features: ClassVar[frozenset[str]] = frozenset(
        {FEATURE_FOLDERS, FEATURE_FLAGS, FEATURE_MOVE, FEATURE_COPY, FEATURE_DELETE}
    )

    def __init__(self, config) -> None:
        super().__init__(config)
        self.client: IMAPClient | None = None
        # (folder, readonly) currently selected, to skip redundant SELECTs.
        self._selected: tuple[str, bool] | None = None
        self._uidvalidities: dict[str, int] = {}

    # --- error translation ----------------------------------------------

    @contextlib.contextmanager
    def _errors(self, *, connecting: bool = False, folder: str | None = None) -> Iterator[None]:
        cfg = self.config
        try:
            yield
        except BackendError:
            raise
        except ssl.SSLError as exc:  # before OSError: SSLError is one
            raise tls.ssl_error(exc, cfg.host, cfg.port, connecting=connecting) from exc
        except LoginError as exc:
            raise self._login_error(exc) from exc
        except IMAPClientAbortError as exc:
            # imaplib says "abort" for EOF, socket errors and BYE.
            self._forget_connection()
            text = _server_text(exc)
            if "socket error" in text or "EOF" in text or "BYE" in text or "shutting" in text:
                raise ConnectionFailed(
                    f"the server {cfg.host}:{cfg.port} closed the connection"
                ) from exc
            raise ConnectionFailed(
                f"the connection to {cfg.host}:{cfg.port} broke ({text})"
            ) from exc
        except CapabilityError as exc:
            raise NotSupported(f"the IMAP server lacks a needed capability ({exc})") from exc
        except IMAPClientError as exc:
            raise self._command_error(exc, connecting=connecting, folder=folder) from exc
        except OSError as exc:
            self._forget_connection()
            raise tls.explain_os_error(
                exc,
                cfg.host,
                cfg.port,
                cfg.timeout,
                connecting=connecting,
                security=cfg.security,
            ) from exc

    def _login_error(self, exc: BaseException) -> BackendError:
        text = _server_text(exc)
        if any(code in text for code in TEMPORARY_CODES):
            return TemporaryFailure(
                f"the server cannot log in {self.config.username} right now ({text})"
            )
        return AuthenticationFailed(f"authentication failed for user {self.config.username}")

    def _command_error(
        self, exc: BaseException, *, connecting: bool, folder: str | None
    ) -> BackendError:
        text = _server_text(exc)
        upper = text.upper()
        if connecting:
            return ProtocolError(
                f"{self.config.host}:{self.config.port} did not answer like an IMAP server "
                f"({text[:200]})"
            )
        if any(code in upper for code in AUTH_CODES):
            return AuthenticationFailed(f"authentication failed for user {self.config.username}")
        if "[NONEXISTENT]" in upper or "DOESN'T EXIST" in upper or "NOT EXIST" in upper:
            return FolderNotFound(f"the folder {folder!r} does not exist" if folder else text)
        if any(code in upper for code in TEMPORARY_CODES):
            return TemporaryFailure(f"the server is temporarily unable to do this ({text})")
        return ProtocolError(f"the IMAP server refused: {text}")

    def _forget_connection(self) -> None:
        self._selected = None

    # --- lifecycle ------------------------------------------------------

    def connect(self) -> None:
        cfg = self.config
        context = tls.client_context(cfg.verify_certificate)
        with self._errors(connecting=True):
            client = IMAPClient(
                cfg.host,
                cfg.port,
                ssl=cfg.security == Security.SSL,
                ssl_context=context,
                timeout=cfg.timeout,
            )
            self.client = client
            client.normalise_times = False  # keep INTERNALDATE's timezone
            self.greeting = _decode(client.welcome)
            if cfg.security == Security.STARTTLS:
                if not client.has_capability("STARTTLS"):
                    # Never fall back to plaintext: the password would follow.
                    raise TLSFailed(
                        f"{cfg.host}:{cfg.port} does not offer STARTTLS; choose SSL (usually "
                        "port 993) or ask the provider to enable STARTTLS"
                    )
                client.starttls(context)
            if cfg.security != Security.NONE:
                self.tls = tls.describe(client.socket(), cfg.verify_certificate)
            self.capabilities = _capabilities(client)

    def login(self) -> None:
        cfg = self.config
        client = self._client()
        if "LOGINDISABLED" in self.capabilities:
            raise AuthenticationFailed(
                f"{cfg.host} refuses passwords over an unencrypted connection; "
                "choose STARTTLS or SSL"
            )
        with self._errors():
            if (cfg.username + cfg.password).isascii():
                client.login(cfg.username, cfg.password)
            elif "AUTH=PLAIN" in self.capabilities:
                # LOGIN takes ASCII only; SASL PLAIN carries UTF-8 (RFC 4616).
                try:
                    client.plain_login(cfg.username, cfg.password)
                except IMAPClientError as exc:
                    raise self._login_error(exc) from exc
            else:
                raise AuthenticationFailed(
                    f"{cfg.host} accepts only ASCII user names and passwords "
                    "(it does not offer AUTH=PLAIN)"
                )
            self.capabilities = _capabilities(client)

    def close(self) -> None:
        client, self.client = self.client, None
        self._selected = None
        if client is None:
            return
        try:
            client.logout()
        except Exception:
            with contextlib.suppress(Exception):
                client.shutdown()

    def _client(self) -> IMAPClient:
        if self.client is None:
            raise ConnectionFailed("not connected to the IMAP server (call open() first)")
        return self.client

    def _has(self, capability: str) -> bool:
        return capability in self.capabilities

    def _select(self, folder: str, *, readonly: bool) -> dict:
        """SELECT (or EXAMINE when ``readonly``) unless already in that state."""
        client = self._client()
        self._selected = None  # a failed SELECT leaves nothing selected
        with self._errors(folder=folder):
            response = client.select_folder(folder, readonly=readonly)
        self._selected = (folder, readonly)
        uidvalidity = _int_or_none(response.get(b"UIDVALIDITY"))
        if uidvalidity is not None:
            self._uidvalidities[folder] = uidvalidity
        return response

    def _ensure_selected(self, folder: str, *, readonly: bool) -> None:
        # A read-write selection serves reads too; EXAMINE cannot serve writes.
        if self._selected == (folder, readonly) or self._selected == (folder, False):
            return
        self._select(folder, readonly=readonly)

    # --- reading --------------------------------------------------------

    def list_folders(self) -> list[str]:
        client = self._client()
        with self._errors():
            entries = client.list_folders()
        names = []
        for flags, _delimiter, name in entries:
            lowered = {f.lower() for f in flags}
            if b"\\noselect" in lowered or b"\\nonexistent" in lowered:
                continue
            names.append(_decode(name))
        return names

    def folder_info(self, folder: str) -> FolderInfo:
        client = self._client()
        response = self._select(folder, readonly=True)
        with self._errors(folder=folder):
            # EXAMINE gives no unseen count; SEARCH UNSEEN in the selected folder does.
            unseen = len(client.search(["UNSEEN"]))
        return FolderInfo(
            name=folder,
            message_count=int(response.get(b"EXISTS", 0)),
            unseen_count=unseen,
            uidvalidity=_int_or_none(response.get(b"UIDVALIDITY")),
            uidnext=_int_or_none(response.get(b"UIDNEXT")),
        )

    def search(
        self,
        folder: str,
        criteria: SearchCriteria,
        *,
        newest_first: bool = False,
        limit: int | None = None,
    ) -> list[str]:
        client = self._client()
        self._ensure_selected(folder, readonly=True)
        terms, charset = _search_terms(criteria)
        with self._errors(folder=folder):
            uids = client.search(terms, charset=charset)
        uids = sorted(set(uids), reverse=newest_first)
        if criteria.min_uid is not None:
            # "N:*" always includes the highest UID, even when it is below N.
            uids = [uid for uid in uids if uid >= criteria.min_uid]
        ids = [str(uid) for uid in uids if str(uid) not in criteria.exclude_ids]
        return ids[:limit] if limit is not None else ids

    def fetch(self, folder: str, ids: Sequence[str]) -> Iterator[FetchedMessage]:
        client = self._client()
        uids = _uids(ids)
        if not uids:
            return
        self._ensure_selected(folder, readonly=True)
        uidvalidity = self._uidvalidity(folder)
        step = max(1, self.batch_size)
        for start in range(0, len(uids), step):
            batch = uids[start : start + step]
            with self._errors(folder=folder):
                data = client.fetch(
                    batch, [b"BODY.PEEK[]", b"FLAGS", b"RFC822.SIZE", b"INTERNALDATE"]
                )
            for uid in batch:
                item = data.get(uid)
                if item is None or b"BODY[]" not in item:
                    continue  # expunged meanwhile
                raw = item[b"BODY[]"]
                yield FetchedMessage(
                    server_id=str(uid),
                    raw=raw,
                    folder=folder,
                    flags=_flags(item.get(b"FLAGS", ())),
                    size=int(item.get(b"RFC822.SIZE", len(raw))),
                    uidvalidity=uidvalidity,
                    internal_date=_datetime(item.get(b"INTERNALDATE")),
                )

    def _uidvalidity(self, folder: str) -> int | None:
        value = self._uidvalidities.get(folder)
        if value is None:
            with self._errors(folder=folder):
                status = self._client().folder_status(folder, [b"UIDVALIDITY"])
            value = _int_or_none(status.get(b"UIDVALIDITY"))
        return value

    # --- changing -------------------------------------------------------

    def _existing(self, folder: str, ids: Sequence[str]) -> list[int]:
        """Select read-write and keep only the UIDs that still exist."""
        uids = _uids(ids)
        if not uids:
            return []
        self._ensure_selected(folder, readonly=False)
        with self._errors(folder=folder):
            return sorted(self._client().search(["UID", _uid_set(uids)]))

    def set_flags(
        self,
        folder: str,
        ids: Sequence[str],
        *,
        add: Iterable[Flag] = (),
        remove: Iterable[Flag] = (),
    ) -> int:
        client = self._client()
        add_flags = [FLAG_TO_IMAP[Flag(f)] for f in add]
        remove_flags = [FLAG_TO_IMAP[Flag(f)] for f in remove]
        uids = self._existing(folder, ids)
        if not uids or not (add_flags or remove_flags):
            return 0
        with self._errors(folder=folder):
            if add_flags:
                client.add_flags(_uid_set(uids), add_flags, silent=True)
            if remove_flags:
                client.remove_flags(_uid_set(uids), remove_flags, silent=True)
        # Counted as the messages the change was applied to (a message that
        # already had the flag counts too): IMAP does not say which changed.
        return len(uids)

    def _ensure_target(self, target: str, *, create: bool) -> None:
        client = self._client()
        with self._errors(folder=target):
            if client.folder_exists(target):
                return
            if not create:
                raise FolderNotFound(f"the folder {target!r} does not exist")
            client.create_folder(target)

    def copy(self, folder: str, ids: Sequence[str], target: str, *, create: bool = False) -> int:
        self._ensure_target(target, create=create)
        uids = self._existing(folder, ids)
        if uids:
            with self._errors(folder=target):
                self._client().copy(_uid_set(uids), target)
        return len(uids)

    def move(self, folder: str, ids: Sequence[str], target: str, *, create: bool = False) -> int:
        self._ensure_target(target, create=create)
        uids = self._existing(folder, ids)
        if not uids:
            return 0
        client = self._client()
        with self._errors(folder=target):
            if self._has("MOVE"):
                client.move(_uid_set(uids), target)
            else:
                client.copy(_uid_set(uids), target)
                self._expunge(uids)
        return len(uids)

    def delete(self, folder: str, ids: Sequence[str]) -> int:
        uids = self._existing(folder, ids)
        if uids:
            with self._errors(folder=folder):
                self._expunge(uids)
        return len(uids)

    def _expunge(self, uids: list[int]) -> None:
        client = self._client()
        client.delete_messages(_uid_set(uids), silent=True)
        if self._has("UIDPLUS"):
            client.uid_expunge(_uid_set(uids))
        else:
            # Without UIDPLUS, EXPUNGE also removes other messages someone
            # else marked \Deleted in this folder; there is no narrower way.
            client.expunge()


# --- helpers -----------------------------------------------------------------


def _search_terms(criteria: SearchCriteria) -> tuple[list, str | None]:
    terms: list = []
    if criteria.unseen_only:
        terms.append("UNSEEN")
    for key, value in (
        ("FROM", criteria.from_contains),
        ("TO", criteria.to_contains),
        ("SUBJECT", criteria.subject_contains),
    ):
        if value:
            terms += [key, value]
    if criteria.since:
        terms += ["SINCE", _date(criteria.since)]
    if criteria.before:
        terms += ["BEFORE", _date(criteria.before)]
    if criteria.larger_than is not None:
        terms += ["LARGER", int(criteria.larger_than)]
    if criteria.min_uid is not None:
        terms += ["UID", f"{max(1, int(criteria.min_uid))}:*"]
    if not terms:
        terms = ["ALL"]
    texts = (criteria.from_contains, criteria.to_contains, criteria.subject_contains)
    charset = "UTF-8" if any(not t.isascii() for t in texts) else None
    return terms, charset


def _date(value: dt.date) -> dt.date:
    # SINCE/BEFORE compare dates only; a datetime would be formatted the same.
    return value.date() if isinstance(value, dt.datetime) else value


def _uids(ids: Sequence[str]) -> list[int]:
    uids = []
    for value in ids:
        try:
            uid = int(value)
        except (TypeError, ValueError):
            raise ProtocolError(f"{value!r} is not an IMAP UID") from None
        if uid <= 0:
            raise ProtocolError(f"{value!r} is not an IMAP UID")
        uids.append(uid)
    return list(dict.fromkeys(uids))


def _uid_set(uids: Iterable[int]) -> str:
    """A compact IMAP sequence set: [1, 2, 3, 7] -> "1:3,7"."""
    parts: list[str] = []
    run: list[int] = []
    for uid in sorted(set(uids)):
        if run and uid == run[-1] + 1:
            run.append(uid)
            continue
        if run:
            parts.append(str(run[0]) if len(run) == 1 else f"{run[0]}:{run[-1]}")
        run = [uid]
    if run:
        parts.append(str(run[0]) if len(run) == 1 else f"{run[0]}:{run[-1]}")
    return ",".join(parts)


def _flags(raw_flags: Iterable[bytes]) -> frozenset[Flag]:
    return frozenset(
        IMAP_TO_FLAG[f.lower()]
        for f in raw_flags
        if isinstance(f, bytes) and f.lower() in IMAP_TO_FLAG
    )


def _datetime(value) -> dt.datetime | None:
    return value if isinstance(value, dt.datetime) else None


def _int_or_none(value) -> int | None:
    try:
        return int(value) if value is not None else None
    except (TypeError, ValueError):
        return None


def _decode(value) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return str(value or "")


def _capabilities(client: IMAPClient) -> tuple[str, ...]:
    return tuple(_decode(c).upper() for c in client.capabilities())
