"""A loopback Exchange Web Services fake, so exchangelib's real code can be tested.

No Exchange server can run here. ``FakeEWSServer`` is a ``ThreadingHTTPServer``
on 127.0.0.1 that answers the SOAP requests exchangelib sends to
``/EWS/Exchange.asmx`` from an in-memory mailbox: folders and messages, each
message keeping its raw RFC 5322 bytes.

Personas: alice (``alice@example.test`` / ``alice-secret-pw``) owns the one
mailbox; any other user or password gets HTTP 401, as Exchange does with Basic
auth.

Answered operations: GetFolder, FindFolder, FindItem, GetItem, CreateItem,
UpdateItem, MoveItem, CopyItem, DeleteItem, CreateFolder. Anything else gets a
SOAP fault, so an unexpected request fails a test loudly instead of passing.

FindItem evaluates restrictions (And, Or, Not, IsEqualTo, IsNotEqualTo,
IsGreaterThan[OrEqualTo], IsLessThan[OrEqualTo], Contains, Exists) on
message:IsRead, item:Subject, message:From, message:Sender, item:DisplayTo,
item:DateTimeReceived, item:Size and the flag-status extended property
(0x1090); SortOrder on those fields; IndexedPageItemView paging. An unknown
field in a restriction is a SOAP fault rather than a silent match.
"""

from __future__ import annotations

import base64
import datetime as dt
import email
import email.policy
import email.utils
import itertools
import socket
import ssl
import sys
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from xml.etree import ElementTree as ET
from xml.sax.saxutils import escape, quoteattr

import pytest

from mailsessions.backends.base import Security, ServerConfig
from tests.servers.certs import CertPair, make_self_signed

SOAP_NS = "http://schemas.xmlsoap.org/soap/envelope/"
M_NS = "http://schemas.microsoft.com/exchange/services/2006/messages"
T_NS = "http://schemas.microsoft.com/exchange/services/2006/types"
PATH = "/EWS/Exchange.asmx"
FLAG_TAG = "0x1090"  # PidTagFlagStatus: absent = not flagged, 1 = complete, 2 = flagged

USERS = {"alice": "alice-secret-pw", "alice@example.test": "alice-secret-pw"}
EMAIL = "alice@example.test"


def m(tag: str) -> str:
    return f"{{{M_NS}}}{tag}"


def t(tag: str) -> str:
    return f"{{{T_NS}}}{tag}"


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


class SoapFault(Exception):
    """The request is something this fake does not understand."""


class EWSError(Exception):
    """An error answered inside a response message (ResponseClass="Error")."""

    def __init__(self, code: str, text: str) -> None:
        super().__init__(text)
        self.code = code
        self.text = text


# --- the mailbox model ----------------------------------------------------


def _new_id(prefix: str) -> str:
    # Real ids are long opaque base64; these are opaque enough and easy to read in failures.
    return f"{prefix}-{uuid.uuid4().hex}"


@dataclass
class FakeFolder:
    id: str
    name: str
    parent_id: str | None
    distinguished: str | None = None
    folder_class: str | None = "IPF.Note"
    changekey: str = field(default_factory=lambda: uuid.uuid4().hex[:8])


@dataclass
class FakeItem:
    id: str
    folder_id: str
    mime: bytes
    is_read: bool = False
    flag_status: int | None = None
    subject: str = ""
    sender: tuple[str, str] = ("", "")  # (name, address)
    to: list[tuple[str, str]] = field(default_factory=list)
    datetime_received: dt.datetime = field(default_factory=lambda: dt.datetime.now(dt.UTC))
    changekey: str = field(default_factory=lambda: uuid.uuid4().hex[:8])

    @property
    def size(self) -> int:
        return len(self.mime)

    @property
    def display_to(self) -> str:
        return "; ".join(name or addr for name, addr in self.to)


@dataclass
class SentMessage:
    """A message exchangelib asked to send (CreateItem SendOnly / SendAndSaveCopy).

    ``recipients`` are the addresses from ToRecipients, CcRecipients and
    BccRecipients, the envelope Exchange would deliver to.
    """

    mime: bytes
    recipients: list[str]
    disposition: str


def _parse_mime(raw: bytes) -> dict:
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    sender = email.utils.parseaddr(str(msg.get("From", "")))
    to = email.utils.getaddresses([str(v) for v in msg.get_all("To", [])])
    received = None
    if msg.get("Date"):
        try:
            received = email.utils.parsedate_to_datetime(str(msg["Date"]))
        except (TypeError, ValueError):
            received = None
    if received is not None and received.tzinfo is None:
        received = received.replace(tzinfo=dt.UTC)
    return {
        "subject": str(msg.get("Subject", "")),
        "sender": sender,
        "to": [p for p in to if p[1]],
        "datetime_received": received,
    }


class Mailbox:
    """alice's mailbox: a folder tree and the messages in it."""

    WELL_KNOWN = [
        # (distinguished id, display name, parent distinguished id)
        ("msgfolderroot", "Top of Information Store", "root"),
        ("inbox", "Inbox", "msgfolderroot"),
        ("sentitems", "Sent Items", "msgfolderroot"),
        ("drafts", "Drafts", "msgfolderroot"),
        ("deleteditems", "Deleted Items", "msgfolderroot"),
    ]

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.folders: dict[str, FakeFolder] = {}
        self.items: dict[str, FakeItem] = {}
        self.sent: list[SentMessage] = []
        self._clock = itertools.count()
        root = FakeFolder(_new_id("folder"), "root", None, "root", folder_class=None)
        self.folders[root.id] = root
        for dist, name, parent in self.WELL_KNOWN:
            f = FakeFolder(_new_id("folder"), name, self.by_distinguished(parent).id, dist)
            self.folders[f.id] = f

    def by_distinguished(self, dist: str) -> FakeFolder:
        for f in self.folders.values():
            if f.distinguished == dist:
                return f
        raise EWSError("ErrorFolderNotFound", f"The distinguished folder {dist!r} was not found.")

    def folder(self, folder_id: str) -> FakeFolder:
        try:
            return self.folders[folder_id]
        except KeyError:
            raise EWSError(
                "ErrorFolderNotFound", "The specified folder could not be found in the store."
            ) from None

    def children(self, folder_id: str) -> list[FakeFolder]:
        return [f for f in self.folders.values() if f.parent_id == folder_id]

    def descendants(self, folder_id: str) -> Iterator[FakeFolder]:
        for child in sorted(self.children(folder_id), key=lambda f: f.name):
            yield child
            yield from self.descendants(child.id)

    def by_path(self, path: str) -> FakeFolder:
        """A folder by path under msgfolderroot ("Inbox/Sub"); "inbox" etc. also work."""
        for f in self.folders.values():
            if f.distinguished and f.distinguished == path.lower():
                return f
        current = self.by_distinguished("msgfolderroot")
        for part in path.split("/"):
            match = [c for c in self.children(current.id) if c.name.lower() == part.lower()]
            if not match:
                raise KeyError(path)
            current = match[0]
        return current

    def item(self, item_id: str) -> FakeItem:
        try:
            return self.items[item_id]
        except KeyError:
            raise EWSError(
                "ErrorItemNotFound", "The specified object was not found in the store."
            ) from None

    def add_item(self, folder_id: str, raw: bytes, *, is_read: bool = False) -> FakeItem:
        parsed = _parse_mime(raw)
        received = parsed.pop("datetime_received")
        if received is None:
            # Distinct, increasing times keep "oldest first" ordering stable.
            received = dt.datetime(2024, 1, 1, tzinfo=dt.UTC) + dt.timedelta(
                minutes=next(self._clock)
            )
        item = FakeItem(
            _new_id("item"),
            folder_id,
            raw,
            is_read=is_read,
            datetime_received=received,
            **parsed,
        )
        self.items[item.id] = item
        return item

    def folder_items(self, folder_id: str) -> list[FakeItem]:
        return sorted(
            (i for i in self.items.values() if i.folder_id == folder_id),
            key=lambda i: (i.datetime_received, i.id),
        )


# --- XML out --------------------------------------------------------------


def _dt(value: dt.datetime) -> str:
    return value.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _mailbox_xml(name: str, addr: str) -> str:
    return (
        f"<t:Mailbox><t:Name>{escape(name or addr)}</t:Name>"
        f"<t:EmailAddress>{escape(addr)}</t:EmailAddress>"
        "<t:RoutingType>SMTP</t:RoutingType><t:MailboxType>OneOff</t:MailboxType></t:Mailbox>"
    )


def folder_xml(box: Mailbox, f: FakeFolder) -> str:
    items = box.folder_items(f.id)
    parts = [f"<t:FolderId Id={quoteattr(f.id)} ChangeKey={quoteattr(f.changekey)}/>"]
    if f.parent_id:
        parent = box.folders[f.parent_id]
        parts.append(
            f"<t:ParentFolderId Id={quoteattr(parent.id)} ChangeKey={quoteattr(parent.changekey)}/>"
        )
    if f.folder_class:
        parts.append(f"<t:FolderClass>{f.folder_class}</t:FolderClass>")
    parts.append(f"<t:DisplayName>{escape(f.name)}</t:DisplayName>")
    parts.append(f"<t:TotalCount>{len(items)}</t:TotalCount>")
    parts.append(f"<t:ChildFolderCount>{len(box.children(f.id))}</t:ChildFolderCount>")
    parts.append(f"<t:UnreadCount>{sum(not i.is_read for i in items)}</t:UnreadCount>")
    return "<t:Folder>" + "".join(parts) + "</t:Folder>"


def item_xml(box: Mailbox, item: FakeItem, *, with_mime: bool, ids_only: bool = False) -> str:
    parent = box.folders[item.folder_id]
    parts = []
    if with_mime:
        b64 = base64.b64encode(item.mime).decode()
        parts.append(f'<t:MimeContent CharacterSet="UTF-8">{b64}</t:MimeContent>')
    parts.append(f"<t:ItemId Id={quoteattr(item.id)} ChangeKey={quoteattr(item.changekey)}/>")
    if ids_only:
        return "<t:Message>" + "".join(parts) + "</t:Message>"
    parts.append(
        f"<t:ParentFolderId Id={quoteattr(parent.id)} ChangeKey={quoteattr(parent.changekey)}/>"
    )
    parts.append("<t:ItemClass>IPM.Note</t:ItemClass>")
    parts.append(f"<t:Subject>{escape(item.subject)}</t:Subject>")
    parts.append(f"<t:DateTimeReceived>{_dt(item.datetime_received)}</t:DateTimeReceived>")
    parts.append(f"<t:Size>{item.size}</t:Size>")
    if item.flag_status is not None:
        parts.append(
            f'<t:ExtendedProperty><t:ExtendedFieldURI PropertyTag="{FLAG_TAG}" '
            f'PropertyType="Integer"/><t:Value>{item.flag_status}</t:Value></t:ExtendedProperty>'
        )
    if item.to:
        parts.append(f"<t:DisplayTo>{escape(item.display_to)}</t:DisplayTo>")
        parts.append(
            "<t:ToRecipients>"
            + "".join(_mailbox_xml(n, a) for n, a in item.to)
            + "</t:ToRecipients>"
        )
    parts.append(f"<t:IsRead>{'true' if item.is_read else 'false'}</t:IsRead>")
    if item.sender[1]:
        parts.append(f"<t:From>{_mailbox_xml(*item.sender)}</t:From>")
    return "<t:Message>" + "".join(parts) + "</t:Message>"


def _envelope(body: str) -> bytes:
    return (
        '<?xml version="1.0" encoding="utf-8"?>'
        f'<s:Envelope xmlns:s="{SOAP_NS}" xmlns:m="{M_NS}" xmlns:t="{T_NS}">'
        "<s:Header>"
        '<h:ServerVersionInfo xmlns:h="http://schemas.microsoft.com/exchange/services/2006/types" '
        'MajorVersion="15" MinorVersion="1" MajorBuildNumber="2507" MinorBuildNumber="6" '
        'Version="V2017_07_11"/>'
        "</s:Header>"
        f"<s:Body>{body}</s:Body></s:Envelope>"
    ).encode()


def _fault(text: str) -> bytes:
    return (
        '<?xml version="1.0" encoding="utf-8"?>'
        f'<s:Envelope xmlns:s="{SOAP_NS}"><s:Body><s:Fault>'
        "<faultcode>s:Client</faultcode>"
        f"<faultstring>{escape(text)}</faultstring>"
        "</s:Fault></s:Body></s:Envelope>"
    ).encode()


def _ok(op: str, inner: str = "", *, attrs: str = "") -> str:
    return (
        f'<m:{op}ResponseMessage ResponseClass="Success"{attrs}>'
        f"<m:ResponseCode>NoError</m:ResponseCode>{inner}</m:{op}ResponseMessage>"
    )


def _err(op: str, e: EWSError) -> str:
    return (
        f'<m:{op}ResponseMessage ResponseClass="Error">'
        f"<m:MessageText>{escape(e.text)}</m:MessageText>"
        f"<m:ResponseCode>{e.code}</m:ResponseCode>"
        f"<m:DescriptiveLinkKey>0</m:DescriptiveLinkKey></m:{op}ResponseMessage>"
    )


def _response(op: str, messages: list[str]) -> str:
    return f"<m:{op}Response><m:ResponseMessages>{''.join(messages)}</m:ResponseMessages></m:{op}Response>"


# --- restrictions ---------------------------------------------------------


def _field_uri(elem: ET.Element) -> str:
    fu = elem.find(t("FieldURI"))
    if fu is not None:
        return fu.get("FieldURI", "")
    ext = elem.find(t("ExtendedFieldURI"))
    if ext is not None:
        return f"ext:{ext.get('PropertyTag')}"
    raise SoapFault("restriction without a field")


def _value_of(item: FakeItem, uri: str):
    if uri == "message:IsRead":
        return item.is_read
    if uri == "item:Subject":
        return item.subject
    if uri in ("message:From", "message:Sender"):
        name, addr = item.sender
        return f"{name} <{addr}>" if name else addr
    if uri == "item:DisplayTo":
        return item.display_to
    if uri == "item:DateTimeReceived":
        return item.datetime_received
    if uri == "item:Size":
        return item.size
    if uri == f"ext:{FLAG_TAG}":
        return item.flag_status
    raise SoapFault(f"the fake cannot evaluate restrictions on {uri}")


def _constant(elem: ET.Element, sample):
    const = elem.find(f"{t('FieldURIOrConstant')}/{t('Constant')}")
    if const is None:
        const = elem.find(t("Constant"))
    if const is None:
        raise SoapFault("restriction without a constant")
    raw = const.get("Value", "")
    if isinstance(sample, bool):
        return raw.lower() in ("1", "true")
    if isinstance(sample, int) or sample is None and raw.isdigit():
        return int(raw)
    if isinstance(sample, dt.datetime):
        return dt.datetime.fromisoformat(raw.replace("Z", "+00:00"))
    return raw


_COMPARE: dict[str, Callable] = {
    "IsEqualTo": lambda a, b: a == b,
    "IsNotEqualTo": lambda a, b: a != b,
    "IsGreaterThan": lambda a, b: a is not None and a > b,
    "IsGreaterThanOrEqualTo": lambda a, b: a is not None and a >= b,
    "IsLessThan": lambda a, b: a is not None and a < b,
    "IsLessThanOrEqualTo": lambda a, b: a is not None and a <= b,
}


def matches(elem: ET.Element, item: FakeItem) -> bool:
    op = _local(elem.tag)
    if op == "And":
        return all(matches(c, item) for c in elem)
    if op == "Or":
        return any(matches(c, item) for c in elem)
    if op == "Not":
        return not matches(elem[0], item)
    if op == "Exists":
        return _value_of(item, _field_uri(elem)) is not None
    if op in _COMPARE:
        value = _value_of(item, _field_uri(elem))
        return _COMPARE[op](value, _constant(elem, value))
    if op == "Contains":
        value = str(_value_of(item, _field_uri(elem)) or "")
        needle = _constant(elem, "")
        if elem.get("ContainmentComparison", "Exact") != "Exact":
            value, needle = value.lower(), needle.lower()
        mode = elem.get("ContainmentMode", "Substring")
        if mode == "FullString":
            return value == needle
        if mode == "Prefixed":
            return value.startswith(needle)
        return needle in value
    raise SoapFault(f"the fake does not evaluate restriction {op}")


# --- the server -----------------------------------------------------------


class FakeEWSServer(ThreadingHTTPServer):
    """An EWS endpoint on loopback with one mailbox; see the module docstring."""

    daemon_threads = True

    def __init__(
        self, users: dict[str, str] | None = None, *, certs: CertPair | None = None
    ) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.ssl_context: ssl.SSLContext | None = None
        if certs is not None:
            self.ssl_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            self.ssl_context.load_cert_chain(certs.cert, certs.key)
        self.users = dict(users or USERS)
        self.box = Mailbox()
        self.requests: list[str] = []  # operation names, in order ("GetItem", ...)
        self.auth_failures = 0
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return self.server_address[1]

    @property
    def endpoint(self) -> str:
        scheme = "https" if self.ssl_context else "http"
        return f"{scheme}://127.0.0.1:{self.port}{PATH}"

    def get_request(self):
        sock, addr = self.socket.accept()
        if self.ssl_context is not None:
            # Handshake in the handler thread, not in the accept loop.
            sock = self.ssl_context.wrap_socket(
                sock, server_side=True, do_handshake_on_connect=False
            )
        return sock, addr

    def handle_error(self, request, client_address) -> None:
        # A client refusing our self-signed certificate is an expected test outcome.
        if isinstance(sys.exc_info()[1], ssl.SSLError | ConnectionError):
            return
        super().handle_error(request, client_address)

    def start(self) -> FakeEWSServer:
        self._thread = threading.Thread(
            target=self.serve_forever, kwargs={"poll_interval": 0.05}, name="fake-ews", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self.shutdown()
        self.server_close()

    # helpers for tests

    def reset(self) -> None:
        with self.box.lock:
            self.box = Mailbox()
            self.requests.clear()
            self.auth_failures = 0

    @property
    def sent(self) -> list[SentMessage]:
        return self.box.sent

    def folder(self, name: str) -> FakeFolder:
        return self.box.by_path(name)

    def add_folder(self, path: str, folder_class: str = "IPF.Note") -> FakeFolder:
        """Create "Inbox/Sub" (parents must exist)."""
        parent_path, _, name = path.rpartition("/")
        parent = (
            self.box.by_path(parent_path)
            if parent_path
            else self.box.by_distinguished("msgfolderroot")
        )
        f = FakeFolder(_new_id("folder"), name, parent.id, folder_class=folder_class)
        self.box.folders[f.id] = f
        return f

    def add_message(self, folder_name: str, raw_bytes: bytes, is_read: bool = False) -> FakeItem:
        with self.box.lock:
            return self.box.add_item(self.folder(folder_name).id, raw_bytes, is_read=is_read)

    def folder_items(self, name: str) -> list[FakeItem]:
        with self.box.lock:
            return self.box.folder_items(self.folder(name).id)

    def count(self, operation: str) -> int:
        return self.requests.count(operation)

    # dispatch

    def handle_soap(self, body: bytes) -> bytes:
        try:
            root = ET.fromstring(body)
        except ET.ParseError as exc:
            return _fault(f"request is not XML: {exc}")
        soap_body = root.find(f"{{{SOAP_NS}}}Body")
        if soap_body is None or len(soap_body) == 0:
            return _fault("no SOAP body")
        request = soap_body[0]
        op = _local(request.tag)
        self.requests.append(op)
        handler = getattr(Operations, op, None)
        if handler is None:
            return _fault(f"the fake does not answer {op}")
        try:
            with self.box.lock:
                return _envelope(handler(self.box, request))
        except SoapFault as exc:
            return _fault(str(exc))


class _Handler(BaseHTTPRequestHandler):
    server: FakeEWSServer
    protocol_version = "HTTP/1.1"

    def setup(self) -> None:
        super().setup()
        # Headers and body go out in two writes; without NODELAY, Nagle plus
        # delayed ACKs add ~40 ms to every request on loopback.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, format, *args):  # noqa: A002 - keep test output quiet
        pass

    def _send(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "text/xml; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def _authorized(self) -> bool:
        header = self.headers.get("Authorization", "")
        if not header.startswith("Basic "):
            return False
        try:
            user, _, password = base64.b64decode(header[6:]).decode().partition(":")
        except ValueError:
            return False
        return self.server.users.get(user) == password

    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        body = self.rfile.read(int(self.headers.get("Content-Length", "0") or 0))
        if self.path != PATH:
            self._send(404, b"not found")
            return
        if not self._authorized():
            self.server.auth_failures += 1
            self._send(401, b"", {"WWW-Authenticate": 'Basic realm="127.0.0.1"'})
            return
        self._send(200, self.server.handle_soap(body))

    def do_GET(self) -> None:  # noqa: N802
        self._send(405, b"")


# --- operations -----------------------------------------------------------


def _folder_ids(box: Mailbox, container: ET.Element | None) -> list[str | EWSError]:
    """Resolve FolderId / DistinguishedFolderId children to folder ids (or errors)."""
    out: list[str | EWSError] = []
    for el in container if container is not None else []:
        try:
            if _local(el.tag) == "DistinguishedFolderId":
                out.append(box.by_distinguished(el.get("Id", "")).id)
            else:
                out.append(box.folder(el.get("Id", "")).id)
        except EWSError as e:
            out.append(e)
    return out


def _one_folder(box: Mailbox, container: ET.Element | None) -> str:
    ids = _folder_ids(box, container)
    if not ids:
        raise SoapFault("no folder id")
    if isinstance(ids[0], EWSError):
        raise ids[0]
    return ids[0]


def _children(elem: ET.Element | None) -> list[ET.Element]:
    # An Element without children is falsy, so "find(...) or []" would be a trap.
    return list(elem) if elem is not None else []


def _item_ids(container: ET.Element | None) -> list[str]:
    return [el.get("Id", "") for el in (container if container is not None else [])]


def _wants_mime(shape: ET.Element | None) -> bool:
    if shape is None:
        return False
    if (shape.findtext(t("IncludeMimeContent")) or "").lower() in ("true", "1"):
        return True
    return any(fu.get("FieldURI") == "item:MimeContent" for fu in shape.iter(t("FieldURI")))


class Operations:
    """One static method per EWS operation: (mailbox, request element) -> response XML."""

    @staticmethod
    def GetFolder(box: Mailbox, req: ET.Element) -> str:  # noqa: N802
        out = []
        for fid in _folder_ids(box, req.find(m("FolderIds"))):
            if isinstance(fid, EWSError):
                out.append(_err("GetFolder", fid))
            else:
                inner = f"<m:Folders>{folder_xml(box, box.folders[fid])}</m:Folders>"
                out.append(_ok("GetFolder", inner))
        return _response("GetFolder", out)

    @staticmethod
    def FindFolder(box: Mailbox, req: ET.Element) -> str:  # noqa: N802
        deep = req.get("Traversal", "Shallow") == "Deep"
        view = req.find(m("IndexedPageFolderView"))
        offset = int(view.get("Offset", "0")) if view is not None else 0
        max_entries = int(view.get("MaxEntriesReturned", "1000")) if view is not None else 1000
        out = []
        for fid in _folder_ids(box, req.find(m("ParentFolderIds"))):
            if isinstance(fid, EWSError):
                out.append(_err("FindFolder", fid))
                continue
            found = (
                list(box.descendants(fid))
                if deep
                else sorted(box.children(fid), key=lambda f: f.name)
            )
            page = found[offset : offset + max_entries]
            last = offset + len(page) >= len(found)
            inner = (
                f'<m:RootFolder IndexedPagingOffset="{offset + len(page)}" '
                f'TotalItemsInView="{len(found)}" IncludesLastItemInRange="{str(last).lower()}">'
                f"<t:Folders>{''.join(folder_xml(box, f) for f in page)}</t:Folders></m:RootFolder>"
            )
            out.append(_ok("FindFolder", inner))
        return _response("FindFolder", out)

    @staticmethod
    def FindItem(box: Mailbox, req: ET.Element) -> str:  # noqa: N802
        if req.find(m("QueryString")) is not None:
            raise SoapFault("the fake does not evaluate AQS QueryString searches")
        restriction = req.find(m("Restriction"))
        view = req.find(m("IndexedPageItemView"))
        offset = int(view.get("Offset", "0")) if view is not None else 0
        max_entries = int(view.get("MaxEntriesReturned", "1000")) if view is not None else 1000
        if view is not None and view.get("BasePoint", "Beginning") != "Beginning":
            raise SoapFault("the fake pages from the beginning only")
        ids_only = (req.findtext(f"{m('ItemShape')}/{t('BaseShape')}") or "") == "IdOnly"
        shape = req.find(m("ItemShape"))
        ids_only = (
            ids_only and not any(True for _ in shape.iter(t("FieldURI")))
            if shape is not None
            else ids_only
        )
        out = []
        for fid in _folder_ids(box, req.find(m("ParentFolderIds"))):
            if isinstance(fid, EWSError):
                out.append(_err("FindItem", fid))
                continue
            found = box.folder_items(fid)
            if restriction is not None and len(restriction):
                found = [i for i in found if matches(restriction[0], i)]
            sort = req.find(m("SortOrder"))
            # Sort by the last key first so the first FieldOrder wins (stable sorts).
            for order in reversed(list(sort)) if sort is not None else []:
                uri = _field_uri(order)
                found.sort(
                    key=lambda i, uri=uri: (_value_of(i, uri) is None, _value_of(i, uri)),
                    reverse=order.get("Order") == "Descending",
                )
            page = found[offset : offset + max_entries]
            last = offset + len(page) >= len(found)
            items = "".join(item_xml(box, i, with_mime=False, ids_only=ids_only) for i in page)
            inner = (
                f'<m:RootFolder IndexedPagingOffset="{offset + len(page)}" '
                f'TotalItemsInView="{len(found)}" IncludesLastItemInRange="{str(last).lower()}">'
                f"<t:Items>{items}</t:Items></m:RootFolder>"
            )
            out.append(_ok("FindItem", inner))
        return _response("FindItem", out)

    @staticmethod
    def GetItem(box: Mailbox, req: ET.Element) -> str:  # noqa: N802
        with_mime = _wants_mime(req.find(m("ItemShape")))
        out = []
        for item_id in _item_ids(req.find(m("ItemIds"))):
            try:
                item = box.item(item_id)
            except EWSError as e:
                out.append(_err("GetItem", e))
                continue
            out.append(
                _ok("GetItem", f"<m:Items>{item_xml(box, item, with_mime=with_mime)}</m:Items>")
            )
        return _response("GetItem", out)

    @staticmethod
    def CreateItem(box: Mailbox, req: ET.Element) -> str:  # noqa: N802
        disposition = req.get("MessageDisposition", "SaveOnly")
        saved = req.find(m("SavedItemFolderId"))
        out = []
        for msg in _children(req.find(m("Items"))):
            if _local(msg.tag) != "Message":
                raise SoapFault(f"the fake only creates messages, not {_local(msg.tag)}")
            b64 = msg.findtext(t("MimeContent"))
            if b64 is None:
                raise SoapFault("the fake only creates messages from MimeContent")
            raw = base64.b64decode(b64)
            to = [
                a.text or ""
                for kind in ("ToRecipients", "CcRecipients", "BccRecipients")
                for a in msg.iterfind(f"{t(kind)}/{t('Mailbox')}/{t('EmailAddress')}")
            ]
            is_read = (msg.findtext(t("IsRead")) or "").lower() in ("true", "1")
            if disposition == "SaveOnly":
                folder_id = (
                    _one_folder(box, saved)
                    if saved is not None
                    else box.by_distinguished("drafts").id
                )
                item = box.add_item(folder_id, raw, is_read=is_read)
                out.append(
                    _ok(
                        "CreateItem",
                        f"<m:Items>{item_xml(box, item, with_mime=False, ids_only=True)}</m:Items>",
                    )
                )
                continue
            if not to and not _parse_mime(raw)["to"]:
                out.append(
                    _err(
                        "CreateItem",
                        EWSError("ErrorInvalidRecipients", "At least one recipient is required."),
                    )
                )
                continue
            box.sent.append(SentMessage(raw, to, disposition))
            if disposition == "SendAndSaveCopy":
                folder_id = (
                    _one_folder(box, saved)
                    if saved is not None
                    else box.by_distinguished("sentitems").id
                )
                box.add_item(folder_id, raw, is_read=True)
            out.append(_ok("CreateItem", "<m:Items/>"))
        return _response("CreateItem", out)

    @staticmethod
    def UpdateItem(box: Mailbox, req: ET.Element) -> str:  # noqa: N802
        out = []
        for change in req.iterfind(f"{m('ItemChanges')}/{t('ItemChange')}"):
            try:
                item = box.item(change.find(t("ItemId")).get("Id", ""))
            except EWSError as e:
                out.append(_err("UpdateItem", e))
                continue
            for update in _children(change.find(t("Updates"))):
                kind = _local(update.tag)
                uri = _field_uri(update)
                if kind == "SetItemField":
                    msg = update.find(t("Message"))
                    if uri == "message:IsRead":
                        item.is_read = (msg.findtext(t("IsRead")) or "").lower() in ("true", "1")
                    elif uri == f"ext:{FLAG_TAG}":
                        item.flag_status = int(
                            msg.findtext(f"{t('ExtendedProperty')}/{t('Value')}") or 0
                        )
                    else:
                        raise SoapFault(f"the fake cannot update {uri}")
                elif kind == "DeleteItemField":
                    if uri == f"ext:{FLAG_TAG}":
                        item.flag_status = None
                    else:
                        raise SoapFault(f"the fake cannot delete {uri}")
                else:
                    raise SoapFault(f"the fake does not do {kind}")
            item.changekey = uuid.uuid4().hex[:8]
            inner = (
                f"<m:Items>{item_xml(box, item, with_mime=False, ids_only=True)}</m:Items>"
                "<m:ConflictResults><t:Count>0</t:Count></m:ConflictResults>"
            )
            out.append(_ok("UpdateItem", inner))
        return _response("UpdateItem", out)

    @staticmethod
    def _move_or_copy(box: Mailbox, req: ET.Element, op: str) -> str:
        target = _one_folder(box, req.find(m("ToFolderId")))
        out = []
        for item_id in _item_ids(req.find(m("ItemIds"))):
            try:
                item = box.item(item_id)
            except EWSError as e:
                out.append(_err(op, e))
                continue
            # Exchange gives a moved or copied item a new id, so the fake does too.
            new = FakeItem(
                _new_id("item"),
                target,
                item.mime,
                is_read=item.is_read,
                flag_status=item.flag_status,
                subject=item.subject,
                sender=item.sender,
                to=list(item.to),
                datetime_received=item.datetime_received,
            )
            box.items[new.id] = new
            if op == "MoveItem":
                del box.items[item.id]
            out.append(
                _ok(op, f"<m:Items>{item_xml(box, new, with_mime=False, ids_only=True)}</m:Items>")
            )
        return _response(op, out)

    @staticmethod
    def MoveItem(box: Mailbox, req: ET.Element) -> str:  # noqa: N802
        return Operations._move_or_copy(box, req, "MoveItem")

    @staticmethod
    def CopyItem(box: Mailbox, req: ET.Element) -> str:  # noqa: N802
        return Operations._move_or_copy(box, req, "CopyItem")

    @staticmethod
    def DeleteItem(box: Mailbox, req: ET.Element) -> str:  # noqa: N802
        delete_type = req.get("DeleteType", "HardDelete")
        trash = box.by_distinguished("deleteditems").id
        out = []
        for item_id in _item_ids(req.find(m("ItemIds"))):
            try:
                item = box.item(item_id)
            except EWSError as e:
                out.append(_err("DeleteItem", e))
                continue
            if delete_type == "MoveToDeletedItems" and item.folder_id != trash:
                item.folder_id = trash
                item.changekey = uuid.uuid4().hex[:8]
            else:
                del box.items[item.id]
            out.append(_ok("DeleteItem"))
        return _response("DeleteItem", out)

    @staticmethod
    def CreateFolder(box: Mailbox, req: ET.Element) -> str:  # noqa: N802
        parent = _one_folder(box, req.find(m("ParentFolderId")))
        out = []
        for spec in _children(req.find(m("Folders"))):
            name = spec.findtext(t("DisplayName")) or ""
            if any(c.name.lower() == name.lower() for c in box.children(parent)):
                out.append(
                    _err(
                        "CreateFolder",
                        EWSError(
                            "ErrorFolderExists", "A folder with the specified name already exists."
                        ),
                    )
                )
                continue
            f = FakeFolder(
                _new_id("folder"),
                name,
                parent,
                folder_class=spec.findtext(t("FolderClass")) or "IPF.Note",
            )
            box.folders[f.id] = f
            inner = f"<m:Folders><t:Folder><t:FolderId Id={quoteattr(f.id)} ChangeKey={quoteattr(f.changekey)}/></t:Folder></m:Folders>"
            out.append(_ok("CreateFolder", inner))
        return _response("CreateFolder", out)


# --- fixtures -------------------------------------------------------------


def ews_config(server: FakeEWSServer, **kw) -> ServerConfig:
    """A ServerConfig for alice on the fake; keyword arguments override fields."""
    values = dict(
        host="127.0.0.1",
        port=server.port,
        security=Security.SSL if server.ssl_context else Security.NONE,
        username="alice",
        password="alice-secret-pw",
        verify_certificate=False,
        timeout=5.0,
        ews_endpoint=server.endpoint,
        ews_auth_type="basic",
        email_address=EMAIL,
    )
    values.update(kw)
    return ServerConfig(**values)


@pytest.fixture(scope="session")
def ews_server() -> Iterator[FakeEWSServer]:
    server = FakeEWSServer().start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def ews_tls_server(tmp_path_factory) -> Iterator[FakeEWSServer]:
    """The same fake behind TLS with a self-signed certificate for 127.0.0.1."""
    certs = make_self_signed(tmp_path_factory.mktemp("ews-certs"))
    server = FakeEWSServer(certs=certs).start()
    yield server
    server.stop()


@pytest.fixture
def ews_mailbox(ews_server: FakeEWSServer) -> FakeEWSServer:
    """The fake with an empty mailbox and no recorded requests."""
    ews_server.reset()
    return ews_server
