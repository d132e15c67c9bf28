"""POP3 through poplib.

POP3 sees one folder (INBOX), no flags and no server-side search. Server ids
are UIDLs, stable across sessions, so incremental reads pass the UIDLs already
stored as ``SearchCriteria.exclude_ids`` (``min_uid`` has no meaning here).

Of the search criteria only ``larger_than`` (from the LIST sizes),
``exclude_ids`` and ``limit``/``newest_first`` are applied by this backend;
header and flag criteria (from, to, subject, since, before, unseen_only)
cannot be evaluated by a POP3 server, so services filter the fetched messages
after parsing them (see ``SERVER_SIDE_CRITERIA``).

Deletion is two-phase in POP3: DELE only marks a message, and the server
removes it when the session ends with QUIT. ``close()`` therefore sends QUIT
(``commit()`` does the same but raises when the server did not confirm); a
connection that drops before QUIT deletes nothing.
"""

from __future__ import annotations

import contextlib
import logging
import poplib
import ssl
from collections.abc import Iterable, Iterator, Sequence
from typing import ClassVar

from mailsessions.backends import tls
from mailsessions.backends.base import (
    FEATURE_DELETE,
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

logger = logging.getLogger(__name__)

INBOX = "INBOX"
# Response codes (RFC 2449, 3206) that mean "not now" rather than "never".
TEMPORARY_CODES = ("[IN-USE]", "[SYS/TEMP]", "[LOGIN-DELAY]")
NOT_SUPPORTED = (
    "POP3 can only read and delete messages; flags, folders, moving and copying need IMAP "
    "or Exchange"
)


def _text(exc: BaseException) -> str:
    arg = exc.args[0] if exc.args else str(exc)
    if isinstance(arg, bytes):
        arg = arg.decode("utf-8", errors="replace")
    return str(arg).strip()


class POP3Backend(IncomingBackend):
    protocol: ClassVar[str] = "pop3"
    features: ClassVar[frozenset[str]] = frozenset({FEATURE_DELETE})
    # SearchCriteria fields this backend applies; services apply the rest.
    SERVER_SIDE_CRITERIA: ClassVar[frozenset[str]] = frozenset({"larger_than", "exclude_ids"})
    # None: pipeline RETR when the server advertises PIPELINING in CAPA.
    pipelining: bool | None = None

    def __init__(self, config) -> None:
        super().__init__(config)
        self.pop: poplib.POP3 | None = None
        self._capa: dict[str, list[str]] = {}
        # UIDL -> message number, read once: a POP3 session sees a fixed
        # snapshot of the maildrop, so the mapping cannot change under us.
        self._numbers: dict[str, int] | None = None
        self._sizes: dict[int, int] | None = None
        self._pending_deletes = 0

    # --- error translation ----------------------------------------------

    @contextlib.contextmanager
    def _errors(self, *, connecting: bool = False, logging_in: bool = False) -> Iterator[None]:
        cfg = self.config
        try:
            yield
        except BackendError:
            raise
        except ssl.SSLError as exc:  # before OSError: SSLError is one
            raise tls.ssl_error(exc, cfg.host, cfg.port, connecting=connecting) from exc
        except poplib.error_proto as exc:
            raise self._reply_error(exc, connecting=connecting, logging_in=logging_in) from exc
        except OSError as exc:
            raise tls.explain_os_error(
                exc,
                cfg.host,
                cfg.port,
                cfg.timeout,
                connecting=connecting,
                security=cfg.security,
            ) from exc

    def _reply_error(
        self, exc: poplib.error_proto, *, connecting: bool, logging_in: bool
    ) -> BackendError:
        cfg = self.config
        text = _text(exc).removeprefix("-ERR").strip()
        upper = text.upper()
        if text == "EOF":
            return ConnectionFailed(f"the server {cfg.host}:{cfg.port} closed the connection")
        if "SHUTTING DOWN" in upper or "DISCONNECTED" in upper:
            return ConnectionFailed(
                f"the server {cfg.host}:{cfg.port} closed the connection ({text})"
            )
        if connecting:
            return ProtocolError(
                f"{cfg.host}:{cfg.port} did not answer like a POP3 server ({text[:200]})"
            )
        if any(code in upper for code in TEMPORARY_CODES):
            return TemporaryFailure(f"the POP3 server is temporarily unable to do this ({text})")
        if logging_in:
            if "PLAINTEXT" in upper:
                return AuthenticationFailed(
                    f"{cfg.host} refuses passwords over an unencrypted connection; "
                    "choose STARTTLS or SSL"
                )
            return AuthenticationFailed(f"authentication failed for user {cfg.username}")
        if text == "line too long":
            return ProtocolError("the POP3 server sent a line longer than poplib accepts")
        return ProtocolError(f"the POP3 server refused: {text}")

    # --- lifecycle ------------------------------------------------------

    def connect(self) -> None:
        cfg = self.config
        context = tls.client_context(cfg.verify_certificate)
        with self._errors(connecting=True):
            if cfg.security == Security.SSL:
                self.pop = poplib.POP3_SSL(cfg.host, cfg.port, context=context, timeout=cfg.timeout)
            else:
                self.pop = poplib.POP3(cfg.host, cfg.port, timeout=cfg.timeout)
            self.greeting = self.pop.getwelcome().decode("utf-8", errors="replace")
            self._capa = self._read_capa()
            if cfg.security == Security.STARTTLS:
                if "STLS" not in self._capa:
                    # Never fall back to plaintext: the password would follow.
                    raise TLSFailed(
                        f"{cfg.host}:{cfg.port} does not offer STLS; choose SSL (usually port "
                        "995) or ask the provider to enable STARTTLS"
                    )
                self.pop.stls(context)
                self._capa = self._read_capa()  # may differ once encrypted
            if cfg.security != Security.NONE:
                self.tls = tls.describe(self.pop.sock, cfg.verify_certificate)
        self.capabilities = tuple(
            " ".join([name, *args]) if args else name for name, args in self._capa.items()
        )

    def _read_capa(self) -> dict[str, list[str]]:
        try:
            return {name.upper(): args for name, args in self._pop().capa().items()}
        except poplib.error_proto as exc:
            if _text(exc) == "-ERR EOF":
                raise
            return {}  # CAPA is optional (RFC 2449); old servers answer -ERR

    def login(self) -> None:
        cfg = self.config
        pop = self._pop()
        with self._errors(logging_in=True):
            pop.user(cfg.username)
            pop.pass_(cfg.password)

    def commit(self) -> None:
        """End the session with QUIT so the server applies pending deletions.

        Raises when the server does not confirm; the connection is closed
        either way.
        """
        pop, self.pop = self.pop, None
        if pop is None:
            return
        try:
            with self._errors():
                pop.quit()
        finally:
            with contextlib.suppress(Exception):
                pop.close()
            self._pending_deletes = 0

    def close(self) -> None:
        """QUIT (committing deletions) and close. Never raises."""
        pending = self._pending_deletes
        try:
            self.commit()
        except BackendError as exc:
            if pending:
                logger.warning(
                    "POP3 %s: %d deletion(s) may not have been applied: %s",
                    self.config.describe(),
                    pending,
                    exc,
                )
        except Exception:  # close() never raises
            logger.debug("POP3 close failed", exc_info=True)

    def _pop(self) -> poplib.POP3:
        if self.pop is None:
            raise ConnectionFailed("not connected to the POP3 server (call open() first)")
        return self.pop

    @staticmethod
    def _check_folder(folder: str) -> None:
        if folder.upper() != INBOX:
            raise FolderNotFound(f"POP3 has only the INBOX, not {folder!r}")

    # --- reading --------------------------------------------------------

    def list_folders(self) -> list[str]:
        return [INBOX]

    def folder_info(self, folder: str) -> FolderInfo:
        self._check_folder(folder)
        with self._errors():
            count, _size = self._pop().stat()
        return FolderInfo(name=INBOX, message_count=count)

    def _uidl_map(self) -> dict[str, int]:
        if self._numbers is None:
            if self._capa and "UIDL" not in self._capa:
                raise NotSupported(
                    "this POP3 server does not support UIDL, so messages cannot be "
                    "told apart between sessions"
                )
            with self._errors():
                _resp, lines, _octets = self._pop().uidl()
            numbers: dict[str, int] = {}
            for line in lines:
                number, _, uidl = line.decode("ascii", errors="replace").partition(" ")
                numbers[uidl.strip()] = int(number)
            self._numbers = numbers
        return self._numbers

    def _size_map(self) -> dict[int, int]:
        if self._sizes is None:
            with self._errors():
                _resp, lines, _octets = self._pop().list()
            sizes: dict[int, int] = {}
            for line in lines:
                number, _, size = line.decode("ascii", errors="replace").partition(" ")
                sizes[int(number)] = int(size.split()[0])
            self._sizes = sizes
        return self._sizes

    def search(
        self,
        folder: str,
        criteria: SearchCriteria,
        *,
        newest_first: bool = False,
        limit: int | None = None,
    ) -> list[str]:
        """UIDLs in maildrop order; see the module docstring for criteria."""
        self._check_folder(folder)
        numbers = self._uidl_map()
        pairs = sorted(numbers.items(), key=lambda item: item[1], reverse=newest_first)
        if criteria.larger_than is not None:
            sizes = self._size_map()
            pairs = [(u, n) for u, n in pairs if sizes.get(n, 0) > criteria.larger_than]
        ids = [uidl for uidl, _n in pairs if uidl not in criteria.exclude_ids]
        return ids[:limit] if limit is not None else ids

    def fetch(self, folder: str, ids: Sequence[str]) -> Iterator[FetchedMessage]:
        self._check_folder(folder)
        numbers = self._uidl_map()
        wanted = [(uidl, numbers[uidl]) for uidl in dict.fromkeys(ids) if uidl in numbers]
        pipelining = self.pipelining
        if pipelining is None:
            pipelining = "PIPELINING" in self._capa
        step = max(1, self.batch_size)
        for start in range(0, len(wanted), step):
            batch = wanted[start : start + step]
            with self._errors():
                bodies = self._retr_pipelined(batch) if pipelining else self._retr_each(batch)
            for (uidl, _number), lines in zip(batch, bodies, strict=True):
                if lines is None:
                    continue
                raw = b"\r\n".join(lines) + b"\r\n" if lines else b""
                yield FetchedMessage(server_id=uidl, raw=raw, folder=INBOX, size=len(raw))

    def _retr_each(self, batch: list[tuple[str, int]]) -> list[list[bytes] | None]:
        pop = self._pop()
        out: list[list[bytes] | None] = []
        for _uidl, number in batch:
            out.append(self._retr_reply(lambda n=number: pop.retr(n)))
        return out

    def _retr_pipelined(self, batch: list[tuple[str, int]]) -> list[list[bytes] | None]:
        # RFC 2449 PIPELINING: send every RETR of the batch at once, then read
        # the replies in order. poplib has no API for this, so its reply
        # reader (_getlongresp) is used directly; commands are tiny, so they
        # cannot fill the socket buffers while replies wait to be read.
        pop = self._pop()
        pop.sock.sendall(b"".join(b"RETR %d\r\n" % number for _uidl, number in batch))
        return [self._retr_reply(pop._getlongresp) for _ in batch]

    @staticmethod
    def _retr_reply(read) -> list[bytes] | None:
        try:
            _resp, lines, _octets = read()
        except poplib.error_proto as exc:
            text = _text(exc)
            if text.startswith("-ERR") and text != "-ERR EOF" and "SHUTTING" not in text.upper():
                return None  # deleted in this session: skipped like a vanished message
            raise
        return lines

    # --- changing -------------------------------------------------------

    def delete(self, folder: str, ids: Sequence[str]) -> int:
        """Mark messages for deletion; the server applies it at QUIT (close)."""
        self._check_folder(folder)
        numbers = self._uidl_map()
        deleted = 0
        pop = self._pop()
        for uidl in dict.fromkeys(ids):
            number = numbers.get(uidl)
            if number is None:
                continue
            with self._errors():
                pop.dele(number)
            del numbers[uidl]
            deleted += 1
        self._pending_deletes += deleted
        return deleted

    def set_flags(
        self,
        folder: str,
        ids: Sequence[str],
        *,
        add: Iterable[Flag] = (),
        remove: Iterable[Flag] = (),
    ) -> int:
        raise NotSupported(NOT_SUPPORTED)

    def move(self, folder: str, ids: Sequence[str], target: str, *, create: bool = False) -> int:
        raise NotSupported(NOT_SUPPORTED)

    def copy(self, folder: str, ids: Sequence[str], target: str, *, create: bool = False) -> int:
        raise NotSupported(NOT_SUPPORTED)
