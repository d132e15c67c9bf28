"""Decoding fetched messages into the fields Read Mail stores.

:func:`parse_message` turns the raw bytes of one RFC 5322 message into a
:class:`ParsedMessage`: decoded headers, the text and HTML bodies and the
attachments. It never raises: whatever could not be decoded (a broken
multipart boundary, invalid base64, an unknown charset, a garbage date, ...)
is described in ``ParsedMessage.defects`` so the caller can flag the message
and keep going.

Why ``compat32`` and not ``email.policy.default``: the modern policy builds
a rich header object for every header on access, which profiling put at
4-5 ms per ~22 KB message; ``compat32`` with explicit
``email.header.decode_header`` / ``email.utils`` calls decodes the same
fields about three times faster. The MIME structure itself is still parsed
by the stdlib (``BytesParser``); this module only walks the resulting tree.
"""

from __future__ import annotations

import codecs
import datetime as dt
import re
from dataclasses import dataclass, field
from email import errors as email_errors
from email.header import decode_header
from email.message import Message
from email.parser import BytesParser
from email.policy import compat32
from email.utils import getaddresses, parsedate_to_datetime

__all__ = ["ParsedAttachment", "ParsedMessage", "parse_message", "safe_filename"]

# Beyond this many nested multiparts we stop descending and record a defect:
# real mail nests a handful of levels; deeper trees are broken or hostile.
MAX_DEPTH = 50

# Decoders for charsets whose label lies in practice (as browsers do, WHATWG):
# "iso-8859-1" text very often carries windows-1252 quotes and euro signs, and
# GB2312/GBK labels cover text that only GB18030 decodes completely.
_CHARSET_SUPERSETS = {
    "iso-8859-1": "cp1252",
    "latin-1": "cp1252",
    "us-ascii": "cp1252",
    "ascii": "cp1252",
    "gb2312": "gb18030",
    "gbk": "gb18030",
    "ks_c_5601-1987": "cp949",
    "euc-kr": "cp949",
    "shift_jis": "cp932",
    "x-sjis": "cp932",
    "iso-2022-jp": "iso2022_jp_ext",
}

_KNOWN_CTES = frozenset(
    {"7bit", "8bit", "binary", "base64", "quoted-printable"}
    | {"x-uuencode", "uuencode", "uue", "x-uue"}
)

_MSGID_RE = re.compile(r"<[^<>\s]*>")
_FOLD_RE = re.compile(r"\r?\n(?=[ \t])")

_DEFECT_TEXT: dict[type[email_errors.MessageDefect], str] = {
    email_errors.NoBoundaryInMultipartDefect: "multipart without a boundary parameter; body kept as text",
    email_errors.StartBoundaryNotFoundDefect: "broken multipart boundary: the declared boundary never appears in the body",
    email_errors.CloseBoundaryNotFoundDefect: "multipart closing boundary missing (message may be truncated)",
    email_errors.FirstHeaderLineIsContinuationDefect: "first header line is a continuation line",
    email_errors.MisplacedEnvelopeHeaderDefect: "misplaced envelope 'From ' line among the headers",
    email_errors.MissingHeaderBodySeparatorDefect: "malformed header line (no blank line between headers and body)",
    email_errors.MultipartInvariantViolationDefect: "declared multipart but the body is not multipart",
    email_errors.InvalidMultipartContentTransferEncodingDefect: "multipart part with an invalid Content-Transfer-Encoding",
    email_errors.InvalidBase64PaddingDefect: "invalid base64 padding",
    email_errors.InvalidBase64CharactersDefect: "invalid base64: characters outside the base64 alphabet were skipped",
    email_errors.InvalidBase64LengthDefect: "invalid base64: impossible length, content left undecoded",
}


@dataclass
class ParsedAttachment:
    """One attachment or inline part that is not the text/HTML body."""

    filename: str  # decoded (RFC 2231 / RFC 2047); "" when the part names none
    content_type: str  # lower case "type/subtype"
    size: int  # decoded size in bytes
    content: bytes | None  # None when too large or when not saved
    content_id: str = ""  # without the angle brackets, as cid: URLs use it
    inline: bool = False
    too_large: bool = False


@dataclass
class ParsedMessage:
    """The decoded fields of one message. Text fields are "" when absent.

    Bodies use "\n" line ends whatever the transfer encoding delivered. Every
    string is valid UTF-8 without NUL characters, so it can be stored as is.
    """

    message_id: str = ""
    subject: str = ""
    from_addr: str = ""  # display form: "Name <addr>" (or just "addr")
    from_email: str = ""  # the bare address
    to: list[str] = field(default_factory=list)  # display forms
    cc: list[str] = field(default_factory=list)
    reply_to: list[str] = field(default_factory=list)
    date: dt.datetime | None = None  # always timezone-aware
    in_reply_to: str = ""
    references: list[str] = field(default_factory=list)
    text_body: str = ""
    html_body: str = ""
    attachments: list[ParsedAttachment] = field(default_factory=list)
    defects: list[str] = field(default_factory=list)


# --- public API -------------------------------------------------------------


def parse_message(
    raw: bytes,
    *,
    max_attachment_size: int | None = None,
    save_attachments: bool = True,
) -> ParsedMessage:
    """Decode one raw message; never raises.

    ``max_attachment_size`` (bytes): larger attachments keep their size and
    name but ``content=None`` and ``too_large=True``. ``save_attachments=False``
    keeps only the metadata of every attachment.
    """
    result = ParsedMessage()
    try:
        _parse_into(
            result,
            bytes(raw),
            max_attachment_size=max_attachment_size,
            save_attachments=save_attachments,
        )
    except Exception as exc:  # last resort: the stdlib has corner-case bugs on hostile input
        result.defects.append(f"message could not be fully decoded ({type(exc).__name__})")
    return result


_WINDOWS_RESERVED = frozenset(
    {"CON", "PRN", "AUX", "NUL", "CONIN$", "CONOUT$"}
    | {f"COM{i}" for i in range(10)}
    | {f"LPT{i}" for i in range(10)}
    | {"COM¹", "COM²", "COM³", "LPT¹", "LPT²", "LPT³"}
)
_UNSAFE_CHARS_RE = re.compile(r'[\x00-\x1f\x7f-\x9f<>:"|?*\u200b-\u200f\u202a-\u202e\u2066-\u2069]')
MAX_FILENAME_LENGTH = 150


def safe_filename(name: str) -> str:
    """A file name safe to store on disk or in object storage; never empty.

    Strips any directory part (``/`` and ``\\``), ``..``, NUL/control and
    bidi-override characters, characters Windows forbids, leading dots, and
    Windows reserved device names (``CON``, ``NUL``, ``COM1`` ...), and limits
    the length to 150 characters keeping the extension. Unicode letters are
    kept. Falls back to ``"attachment"``.
    """
    if not isinstance(name, str):
        name = ""
    # Keep only the last path component, whichever separator the sender used.
    name = re.split(r"[/\\]", name)[-1]
    name = _UNSAFE_CHARS_RE.sub("", name)
    # Surrogates (from undecodable bytes) cannot be written as UTF-8 names.
    name = name.encode("utf-8", "replace").decode("utf-8")
    name = name.strip().lstrip(".").strip()
    # Windows drops trailing dots and spaces, making "a.txt." collide with "a.txt".
    name = name.rstrip(". ")
    if not name:
        return "attachment"
    stem, dot, ext = name.rpartition(".")
    if not dot:
        stem, ext = name, ""
    if stem.split(".")[0].strip().upper() in _WINDOWS_RESERVED:
        name = f"_{name}"
        stem = f"_{stem}"
    if len(name) > MAX_FILENAME_LENGTH:
        ext = ext[:20]  # an "extension" longer than this is not one
        keep = MAX_FILENAME_LENGTH - (len(ext) + 1 if ext else 0)
        name = f"{stem[:keep].rstrip('. ')}.{ext}" if ext else stem[:MAX_FILENAME_LENGTH]
    # Storage keeps only word characters, "-" and "."; a name of symbols alone
    # ("€", "☃☃") would leave nothing, so it becomes "attachment" (+ extension).
    if not _STORABLE_RE.search(stem if dot else name):
        return f"attachment.{ext}" if dot and _STORABLE_RE.search(ext) else "attachment"
    return name or "attachment"


_STORABLE_RE = re.compile(r"(?u)\w")


# --- the walk -----------------------------------------------------------------


def _parse_into(
    result: ParsedMessage,
    raw: bytes,
    *,
    max_attachment_size: int | None,
    save_attachments: bool,
) -> None:
    try:
        msg = BytesParser(policy=compat32).parsebytes(raw)
    except RecursionError:
        # The stdlib parser recurses once per nesting level; keep the headers.
        result.defects.append("MIME structure nested too deeply to parse; body not decoded")
        msg = BytesParser(policy=compat32).parsebytes(raw, headersonly=True)
        _decode_headers(result, msg)
        return

    _decode_headers(result, msg)

    # Iterative walk (msg.walk() recurses) that carries depth and position.
    stack: list[tuple[Message, int, str, bool]] = [(msg, 0, "", False)]
    while stack:
        part, depth, path, in_alternative = stack.pop()
        content_type = _storable(_fix_8bit(part.get_content_type()))
        where = f"part {path} ({content_type})" if path else "message"
        _collect_defects(result, part, where)
        # get_payload() on a leaf would decode it with its (possibly hostile) charset.
        if part.is_multipart() and content_type.startswith("multipart/"):
            payload = part.get_payload()
            if depth >= MAX_DEPTH:
                result.defects.append(
                    f"{where}: multiparts nested deeper than {MAX_DEPTH} levels; rest skipped"
                )
                continue
            alternative = content_type == "multipart/alternative"
            children = [
                (child, depth + 1, f"{path}.{i}" if path else str(i), alternative)
                for i, child in enumerate(payload, 1)
                if isinstance(child, Message)
            ]
            stack.extend(reversed(children))  # keep document order
            continue
        _take_leaf(
            result,
            part,
            where,
            in_alternative,
            max_attachment_size=max_attachment_size,
            save_attachments=save_attachments,
        )


def _take_leaf(
    result: ParsedMessage,
    part: Message,
    where: str,
    in_alternative: bool,
    *,
    max_attachment_size: int | None,
    save_attachments: bool,
) -> None:
    content_type = _storable(_fix_8bit(part.get_content_type()))
    disposition = (_header_raw(part, "Content-Disposition") or "").split(";", 1)[0].strip().lower()
    filename = _filename(result, part, where)
    is_attachment = disposition == "attachment" or (bool(filename) and disposition != "inline")

    maintype = content_type.partition("/")[0]
    if not is_attachment and maintype in ("text", "multipart"):
        # A "multipart" leaf is one whose boundary was broken: show its raw text.
        is_html = content_type == "text/html"
        if content_type in ("text/plain", "text/html") or maintype == "multipart":
            if is_html and not result.html_body:
                result.html_body = _decode_text(result, part, where)
                return
            if not is_html and not result.text_body:
                result.text_body = _decode_text(result, part, where)
                return
        if in_alternative:
            return  # another rendering of the same content (text/enriched, ...)

    content = _payload_bytes(result, part, where)
    cid = _header_text(result, part, "Content-ID", where).strip().strip("<>").strip()
    too_large = max_attachment_size is not None and len(content) > max_attachment_size
    result.attachments.append(
        ParsedAttachment(
            filename=filename,
            content_type=content_type,
            size=len(content),
            content=content if save_attachments and not too_large else None,
            content_id=cid,
            inline=disposition == "inline" or (not disposition and bool(cid)),
            too_large=too_large,
        )
    )


def _payload_bytes(result: ParsedMessage, part: Message, where: str) -> bytes:
    if part.is_multipart():
        payload = part.get_payload()
        # message/rfc822, message/delivery-status ...: keep the embedded text.
        try:
            return b"\n".join(
                sub.as_bytes(policy=compat32) for sub in payload if isinstance(sub, Message)
            )
        except Exception as exc:  # the generator recurses and can trip on hostile nesting
            result.defects.append(
                f"{where}: embedded message could not be re-serialised ({type(exc).__name__})"
            )
            return b""
    cte = (_header_raw(part, "Content-Transfer-Encoding") or "").strip().lower()
    if cte and cte not in _KNOWN_CTES:
        result.defects.append(
            f"{where}: unknown Content-Transfer-Encoding {cte!r}; content left encoded"
        )
    seen = len(part.defects)
    data = part.get_payload(decode=True)
    # get_payload registers base64 trouble on the part, after the walk reported its defects.
    _collect_defects(result, part, where, start=seen)
    return data if isinstance(data, bytes) else b""


def _collect_defects(result: ParsedMessage, part: Message, where: str, start: int = 0) -> None:
    for defect in part.defects[start:]:
        text = _DEFECT_TEXT.get(type(defect)) or (
            (type(defect).__doc__ or type(defect).__name__).strip().rstrip(".")
        )
        if isinstance(defect, email_errors.StartBoundaryNotFoundDefect):
            text += f" (boundary {part.get_boundary()!r})"
        result.defects.append(f"{where}: {text}")


# --- text and charsets ------------------------------------------------------------


def _codec(name: str | None) -> str | None:
    """The Python codec to decode ``name`` text with, or None if unknown."""
    if not name:
        return None
    name = name.strip().strip("\"'").lower()
    name = _CHARSET_SUPERSETS.get(name, name)
    try:
        info = codecs.lookup(name)
    except (LookupError, ValueError, TypeError):
        return None
    # "base64", "rot13", "zlib" ... are codecs too, but not text encodings.
    if not getattr(info, "_is_text_encoding", True) or info.name in ("undefined",):
        return None
    return info.name


def _storable(text: str) -> str:
    """``text`` without NULs and lone surrogates, which PostgreSQL text rejects.

    Codecs like UTF-7 or raw-unicode-escape can produce lone surrogates.
    """
    if "\x00" in text:
        text = text.replace("\x00", "\ufffd")
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            text = text.encode("utf-8", "replace").decode("utf-8")
    return text


def _decode_bytes(data: bytes, charset: str | None) -> tuple[str, bool]:
    """Decode ``data``; returns (text, clean) where clean=False means replacement happened."""
    text, clean = _decode_bytes_raw(data, charset)
    return _storable(text), clean


def _decode_bytes_raw(data: bytes, charset: str | None) -> tuple[str, bool]:
    codec = _codec(charset)
    if codec is not None:
        try:
            return data.decode(codec), True
        except (UnicodeError, LookupError, ValueError, TypeError):
            pass
        if codec == "cp1252":
            return data.decode("latin-1"), True  # every byte is latin-1
    # Undeclared or wrong: UTF-8 is most likely, windows-1252 the usual alternative.
    try:
        return data.decode("utf-8"), codec is None or codec == "utf-8"
    except UnicodeDecodeError:
        pass
    if codec is not None:
        try:
            return data.decode(codec, "replace"), False
        except (UnicodeError, LookupError, ValueError, TypeError):
            pass
    return data.decode("cp1252", "replace"), False


def _decode_text(result: ParsedMessage, part: Message, where: str) -> str:
    data = _payload_bytes(result, part, where)
    try:
        declared = part.get_param("charset")
    except Exception:  # a parameter list odd enough to trip the stdlib
        declared = None
    if isinstance(declared, tuple):  # RFC 2231 form: (charset, language, value)
        declared = declared[2]
    charset = _fix_8bit(str(declared)).strip().lower() if declared else None
    text, clean = _decode_bytes(data, charset)
    text = text.replace("\r\n", "\n")  # one line-end convention whatever the encoding
    if charset and _codec(charset) is None:
        result.defects.append(
            f"{where}: unknown charset {charset!r}; decoded as UTF-8/windows-1252"
        )
    elif not clean:
        label = charset or "us-ascii"
        result.defects.append(f"{where}: text is not valid {label}; undecodable bytes replaced")
    return text


# --- headers ----------------------------------------------------------------------


def _header_raw(part: Message, name: str) -> str | None:
    """The first raw value of header ``name`` with 8-bit bytes decoded (UTF-8 first)."""
    lname = name.lower()
    for key, value in part.raw_items():
        if key.lower() == lname:
            return _fix_8bit(str(value)) if isinstance(value, str) else str(value)
    return None


def _fix_8bit(value: str) -> str:
    # BytesParser keeps raw 8-bit header bytes as surrogate escapes.
    if value.isascii():
        return value
    data = value.encode("utf-8", "surrogateescape")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("cp1252", "replace")


def _decode_words(result: ParsedMessage, value: str, label: str) -> str:
    """Decode RFC 2047 encoded words in an unfolded header value."""
    if "=?" not in value:
        return _storable(value)
    try:
        pieces = decode_header(value)
    except Exception:  # HeaderParseError on bad base64; be safe on the rest too
        result.defects.append(f"{label}: undecodable encoded word; kept as is")
        return value
    out: list[str] = []
    for data, charset in pieces:
        if isinstance(data, str):
            out.append(data)
        elif charset is None:
            # decode_header turns the plain runs into raw-unicode-escape bytes.
            out.append(data.decode("raw-unicode-escape", "replace"))
        else:
            text, clean = _decode_bytes(data, charset)
            if not clean or _codec(charset) is None:
                result.defects.append(
                    f"{label}: encoded word in charset {charset!r} could not be decoded cleanly"
                )
            out.append(text)
    return _storable("".join(out))


def _header_text(result: ParsedMessage, part: Message, name: str, where: str = "message") -> str:
    raw = _header_raw(part, name)
    if raw is None:
        return ""
    label = f"{name} header" if where == "message" else f"{where}: {name} header"
    try:
        return _decode_words(result, _FOLD_RE.sub("", raw), label).strip()
    except Exception as exc:
        result.defects.append(f"{label} could not be decoded ({type(exc).__name__})")
        return ""


def _addresses(result: ParsedMessage, msg: Message, name: str) -> list[tuple[str, str]]:
    values = [_fix_8bit(str(v)) for k, v in msg.raw_items() if k.lower() == name.lower()]
    if not values:
        return []
    try:
        pairs = getaddresses([_FOLD_RE.sub("", v) for v in values])
    except Exception as exc:  # e.g. RecursionError on deeply nested comments
        result.defects.append(f"{name} header could not be parsed ({type(exc).__name__})")
        return []
    out = []
    for display, addr in pairs:
        display = _decode_words(result, display, f"{name} header").strip()
        addr = _storable(addr.strip())
        if display or addr:
            out.append((display, addr))
    return out


def _display(display: str, addr: str) -> str:
    if display and addr:
        return f"{display} <{addr}>"
    return display or addr


def _decode_headers(result: ParsedMessage, msg: Message) -> None:
    result.subject = _header_text(result, msg, "Subject")
    result.message_id = _header_text(result, msg, "Message-ID")
    frm = _addresses(result, msg, "From")
    if frm:
        result.from_addr = _display(*frm[0])
        result.from_email = frm[0][1]
    result.to = [_display(*a) for a in _addresses(result, msg, "To")]
    result.cc = [_display(*a) for a in _addresses(result, msg, "Cc")]
    result.reply_to = [_display(*a) for a in _addresses(result, msg, "Reply-To")]
    in_reply_to = _header_text(result, msg, "In-Reply-To")
    ids = _MSGID_RE.findall(in_reply_to)
    result.in_reply_to = ids[0] if ids else in_reply_to
    references = _header_text(result, msg, "References")
    result.references = _MSGID_RE.findall(references) or references.split()
    date_text = _header_text(result, msg, "Date")
    if date_text:
        result.date = _parse_date(result, date_text)


def _parse_date(result: ParsedMessage, text: str) -> dt.datetime | None:
    try:
        value = parsedate_to_datetime(text)
    except Exception:  # ValueError, TypeError, OverflowError, IndexError on garbage
        value = None
    if value is None:
        result.defects.append(f"Date header {text[:80]!r} is not a valid date")
        return None
    if value.tzinfo is None:  # "-0000": UTC, local zone unknown
        value = value.replace(tzinfo=dt.UTC)
    return value


def _filename(result: ParsedMessage, part: Message, where: str) -> str:
    try:
        name = part.get_filename()
    except Exception as exc:
        result.defects.append(f"{where}: file name could not be decoded ({type(exc).__name__})")
        return ""
    if not name:
        return ""
    name = _fix_8bit(_FOLD_RE.sub("", str(name)))
    return _decode_words(result, name, f"{where}: file name").strip()
