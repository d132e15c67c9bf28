"""A corpus of varied, realistic raw messages and what each must decode to.

Each builder returns the raw bytes of one message (CRLF line ends, as IMAP and
POP3 deliver them). ``corpus()`` maps a name to those bytes and ``EXPECTED``
maps the same name to the decoded facts, so any test can assert exact
decoding — directly with ``mailsessions.mime.parse_message`` or after a round
trip through a real server (APPEND to Dovecot, then Read Mail over IMAP/POP3).

``EXPECTED[name]`` keys (all present for every message):

- ``subject``, ``from`` (display form "Name <addr>"), ``from_email``: exact.
- ``to``: exact list of display forms.
- ``date``: ISO 8601 string of the aware datetime, or None.
- ``text``: a snippet the text body must contain ("" means: text body empty).
- ``html``: a snippet the HTML body must contain, or None for "no HTML body".
- ``attachments``: the decoded file names, in order ("" for unnamed parts).
- ``defects``: True when the message is malformed and must report defects,
  False when it must decode cleanly (no defects at all).
"""

from __future__ import annotations

import base64
import quopri
from collections.abc import Callable

# Tiny but real-looking binary payloads (no NUL-free guarantee needed: base64).
PDF_BYTES = b"%PDF-1.4\n1 0 obj\n<< /Type /Catalog >>\nendobj\ntrailer\n<< /Root 1 0 R >>\n%%EOF\n"
PNG_BYTES = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="
)
XLSX_BYTES = b"PK\x03\x04" + bytes(range(256)) * 4


# --- helpers -------------------------------------------------------------------


def _crlf(text: str) -> bytes:
    """ASCII message text with LF line ends → bytes with CRLF line ends."""
    return text.replace("\r\n", "\n").replace("\n", "\r\n").encode("ascii")


def _crlf_bytes(data: bytes) -> bytes:
    return data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


def enc_b(text: str, charset: str) -> str:
    """An RFC 2047 "B" encoded word."""
    return f"=?{charset}?B?{base64.b64encode(text.encode(charset)).decode()}?="


def enc_q(text: str, charset: str) -> str:
    """An RFC 2047 "Q" encoded word."""
    out = []
    for byte in text.encode(charset):
        ch = chr(byte)
        if ch == " ":
            out.append("_")
        elif ch.isascii() and ch.isalnum():
            out.append(ch)
        else:
            out.append(f"={byte:02X}")
    return f"=?{charset}?Q?{''.join(out)}?="


def _b64(data: bytes) -> str:
    return base64.encodebytes(data).decode("ascii")


def _qp(text: str, charset: str) -> str:
    # LF line ends here; _crlf turns them into CRLF (quopri would escape a CR as =0D).
    return quopri.encodestring(text.encode(charset)).decode("ascii")


# --- builders ----------------------------------------------------------------------


# The signature separator ends in a space (RFC 3676); kept out of the source line.
SIG_SEPARATOR = "-- "


def plain_ascii() -> bytes:
    return _crlf(
        f"""\
Return-Path: <alice@example.com>
Received: from mx.example.com (mx.example.com [192.0.2.10])
\tby mail.example.org with ESMTPS id 4XyZ; Tue, 05 Mar 2024 09:15:02 +0100
From: Alice Example <alice@example.com>
To: Bob Builder <bob@example.org>
Subject: Lunch on Friday?
Date: Tue, 05 Mar 2024 09:15:00 +0100
Message-ID: <plain-ascii-1@example.com>
MIME-Version: 1.0
Content-Type: text/plain; charset=us-ascii
Content-Transfer-Encoding: 7bit

Hi Bob,

are you free for lunch on Friday at noon? The usual place.

{SIG_SEPARATOR}
Alice
"""
    )


def alternative() -> bytes:
    text = "Hello Bob,\n\nthe quarterly numbers are attached — net revenue grew 12 %.\n\nCheers,\nAlice\n"
    html = (
        "<html><body><p>Hello Bob,</p><p>the quarterly numbers are attached &mdash; "
        "net revenue grew <b>12&nbsp;%</b>.</p><p>Cheers,<br>Alice</p></body></html>\n"
    )
    return _crlf(
        f"""\
From: "Alice Example" <alice@example.com>
To: bob@example.org, "Carol C." <carol@example.net>
Subject: Quarterly numbers
Date: Wed, 06 Mar 2024 17:30:45 -0500
Message-ID: <alt-1@example.com>
MIME-Version: 1.0
Content-Type: multipart/alternative; boundary="=_alt_7f3a"

This is a multi-part message in MIME format.

--=_alt_7f3a
Content-Type: text/plain; charset=utf-8
Content-Transfer-Encoding: quoted-printable

{_qp(text, "utf-8")}
--=_alt_7f3a
Content-Type: text/html; charset=utf-8
Content-Transfer-Encoding: quoted-printable

{_qp(html, "utf-8")}
--=_alt_7f3a--
"""
    )


def nested_mixed() -> bytes:
    return _crlf(
        f"""\
From: Alice Example <alice@example.com>
To: Bob Builder <bob@example.org>
Subject: Report attached
Date: Thu, 07 Mar 2024 08:00:00 +0000
Message-ID: <nested-1@example.com>
MIME-Version: 1.0
Content-Type: multipart/mixed; boundary="outer-b1"

--outer-b1
Content-Type: multipart/alternative; boundary="inner-b2"

--inner-b2
Content-Type: text/plain; charset="utf-8"
Content-Transfer-Encoding: 7bit

Please find the report attached.
--inner-b2
Content-Type: text/html; charset="utf-8"
Content-Transfer-Encoding: 7bit

<p>Please find the <i>report</i> attached.</p>
--inner-b2--

--outer-b1
Content-Type: application/pdf; name="report.pdf"
Content-Disposition: attachment; filename="report.pdf"
Content-Transfer-Encoding: base64

{_b64(PDF_BYTES)}
--outer-b1--
"""
    )


def rfc2231_utf8() -> bytes:
    # "Bericht März.pdf" as RFC 2231 UTF-8 (Thunderbird, Apple Mail).
    return _crlf(
        f"""\
From: Juergen Test <juergen@example.de>
To: bob@example.org
Subject: Bericht
Date: Fri, 08 Mar 2024 10:00:00 +0100
Message-ID: <rfc2231-utf8@example.de>
MIME-Version: 1.0
Content-Type: multipart/mixed; boundary="b2231"

--b2231
Content-Type: text/plain; charset=utf-8
Content-Transfer-Encoding: 7bit

Anbei der Bericht.
--b2231
Content-Type: application/pdf; name*=UTF-8''Bericht%20M%C3%A4rz.pdf
Content-Disposition: attachment; filename*=UTF-8''Bericht%20M%C3%A4rz.pdf
Content-Transfer-Encoding: base64

{_b64(PDF_BYTES)}
--b2231--
"""
    )


def rfc2231_latin1() -> bytes:
    # ISO-8859-1 with a language tag and RFC 2231 continuations.
    content = _b64("Un résumé détaillé.\r\n".encode("iso-8859-1"))
    return _crlf(
        f"""\
From: Marie Dupont <marie@example.fr>
To: bob@example.org
Subject: Resume
Date: Fri, 08 Mar 2024 11:00:00 +0100
Message-ID: <rfc2231-latin1@example.fr>
MIME-Version: 1.0
Content-Type: multipart/mixed; boundary="b2231l"

--b2231l
Content-Type: text/plain; charset=us-ascii

Voici le document.
--b2231l
Content-Type: text/plain; charset=iso-8859-1
Content-Disposition: attachment;
 filename*0*=iso-8859-1'fr'R%E9sum%E9%20;
 filename*1*=d%E9taill%E9.txt
Content-Transfer-Encoding: base64

{content}
--b2231l--
"""
    )


def rfc2047_filename() -> bytes:
    # Outlook style: an encoded word inside a quoted filename (not standard, ubiquitous).
    name = "Übersicht 2024 – Q1.xlsx"
    return _crlf(
        f"""\
From: Bob Builder <bob@example.org>
To: alice@example.com
Subject: Overview
Date: Mon, 11 Mar 2024 14:22:10 +0100
Message-ID: <rfc2047-name@example.org>
MIME-Version: 1.0
Content-Type: multipart/mixed; boundary="----=_NextPart_000_0001"

------=_NextPart_000_0001
Content-Type: text/plain; charset="us-ascii"

See attachment.
------=_NextPart_000_0001
Content-Type: application/vnd.openxmlformats-officedocument.spreadsheetml.sheet;
\tname="{enc_b(name, "utf-8")}"
Content-Disposition: attachment;
\tfilename="{enc_b(name, "utf-8")}"
Content-Transfer-Encoding: base64

{_b64(XLSX_BYTES)}
------=_NextPart_000_0001--
"""
    )


def _charset_message(
    charset: str, subject: str, name: str, addr: str, body: str, enc: Callable[[str, str], str]
) -> bytes:
    encoded_body = _b64(body.replace("\n", "\r\n").encode(charset))
    return _crlf(
        f"""\
From: {enc(name, charset)} <{addr}>
To: bob@example.org
Subject: {enc(subject, charset)}
Date: Tue, 12 Mar 2024 12:00:00 +0000
Message-ID: <charset-{charset}@example.net>
MIME-Version: 1.0
Content-Type: text/plain; charset="{charset}"
Content-Transfer-Encoding: base64

{encoded_body}"""
    )


def headers_latin1() -> bytes:
    return _charset_message(
        "iso-8859-1",
        "Réunion à Zürich",
        "François Müller",
        "francois@example.ch",
        "Bonjour, la réunion a lieu à Zürich.\n",
        enc_q,
    )


def headers_cp1252() -> bytes:
    return _charset_message(
        "windows-1252",
        "Preis: 20 € – „Angebot“",
        "Zoë O’Brien",
        "zoe@example.ie",
        "Der Preis beträgt 20 € – ein „gutes“ Angebot.\n",
        enc_q,
    )


def headers_koi8r() -> bytes:
    return _charset_message(
        "koi8-r",
        "Привет из Москвы",
        "Иван Петров",
        "ivan@example.ru",
        "Здравствуйте! Встреча завтра в 10:00.\n",
        enc_b,
    )


def headers_sjis() -> bytes:
    return _charset_message(
        "shift_jis",
        "会議の件について",
        "山田太郎",
        "yamada@example.jp",
        "お世話になっております。明日の会議は十時からです。\n",
        enc_b,
    )


def qp_iso8859_15() -> bytes:
    body = "Le prix est de 15 € pour l'œuvre complète.\nÀ bientôt.\n"
    return _crlf(
        f"""\
From: Marie Dupont <marie@example.fr>
To: bob@example.org
Subject: Prix
Date: Wed, 13 Mar 2024 09:00:00 +0100
Message-ID: <qp-15@example.fr>
MIME-Version: 1.0
Content-Type: text/plain; charset=ISO-8859-15
Content-Transfer-Encoding: quoted-printable

{_qp(body, "iso-8859-15")}"""
    )


def base64_utf8() -> bytes:
    body = "Grüße 👋 — 你好，世界 — Ελληνικά.\nSecond line.\n"
    return _crlf(
        f"""\
From: Alice Example <alice@example.com>
To: bob@example.org
Subject: {enc_b("Grüße 👋", "utf-8")}
Date: Thu, 14 Mar 2024 16:45:00 +0900
Message-ID: <b64-utf8@example.com>
MIME-Version: 1.0
Content-Type: text/plain; charset=UTF-8
Content-Transfer-Encoding: base64

{_b64(body.encode("utf-8"))}"""
    )


def inline_image() -> bytes:
    return _crlf(
        f"""\
From: Newsletter <news@example.com>
To: bob@example.org
Subject: Our new logo
Date: Fri, 15 Mar 2024 07:30:00 +0000
Message-ID: <inline-img@example.com>
MIME-Version: 1.0
Content-Type: multipart/alternative; boundary="alt-x"

--alt-x
Content-Type: text/plain; charset=us-ascii

Our new logo is here.
--alt-x
Content-Type: multipart/related; boundary="rel-y"; type="text/html"

--rel-y
Content-Type: text/html; charset=us-ascii

<html><body><p>Our new logo:</p><img src="cid:logo.123@example.com"></body></html>
--rel-y
Content-Type: image/png; name="logo.png"
Content-Disposition: inline; filename="logo.png"
Content-ID: <logo.123@example.com>
Content-Transfer-Encoding: base64

{_b64(PNG_BYTES)}
--rel-y--
--alt-x--
"""
    )


def threaded_reply() -> bytes:
    return _crlf(
        """\
From: "Builder, Bob" <bob@example.org>
To: Alice Example <alice@example.com>
Cc: carol@example.net, =?utf-8?q?Dani=C3=A8l?= <daniel@example.nl>
Reply-To: list@example.org
Subject: Re: Lunch on Friday?
Date: Tue, 05 Mar 2024 10:02:33 +0100
Message-ID: <reply-1@example.org>
In-Reply-To: <plain-ascii-1@example.com>
References: <thread-0@example.com>
 <plain-ascii-1@example.com>
MIME-Version: 1.0
Content-Type: text/plain; charset=utf-8; format=flowed
Content-Transfer-Encoding: 7bit

Sure, see you there.

> are you free for lunch on Friday at noon?
"""
    )


def forwarded_rfc822() -> bytes:
    inner = plain_ascii().decode("ascii")
    return _crlf(
        f"""\
From: Bob Builder <bob@example.org>
To: carol@example.net
Subject: Fwd: Lunch on Friday?
Date: Tue, 05 Mar 2024 11:00:00 +0100
Message-ID: <fwd-1@example.org>
MIME-Version: 1.0
Content-Type: multipart/mixed; boundary="fwd-b"

--fwd-b
Content-Type: text/plain; charset=us-ascii

Forwarding Alice's message.
--fwd-b
Content-Type: message/rfc822; name="lunch.eml"
Content-Disposition: attachment; filename="lunch.eml"

{inner}
--fwd-b--
"""
    )


def broken_boundary() -> bytes:
    # The header declares one boundary, the body uses another (a buggy mailer).
    return _crlf(
        """\
From: Broken Mailer <noreply@example.com>
To: bob@example.org
Subject: Broken boundary
Date: Sat, 16 Mar 2024 03:00:00 +0000
Message-ID: <broken-boundary@example.com>
MIME-Version: 1.0
Content-Type: multipart/mixed; boundary="declared-boundary"

--actual-boundary
Content-Type: text/plain; charset=us-ascii

The visible text of a broken message.
--actual-boundary--
"""
    )


def invalid_base64() -> bytes:
    return _crlf(
        """\
From: Alice Example <alice@example.com>
To: bob@example.org
Subject: Invalid base64
Date: Sun, 17 Mar 2024 12:00:00 +0000
Message-ID: <bad-b64@example.com>
MIME-Version: 1.0
Content-Type: multipart/mixed; boundary="bb64"

--bb64
Content-Type: text/plain; charset=us-ascii

The attachment below is damaged.
--bb64
Content-Type: application/octet-stream; name="data.bin"
Content-Disposition: attachment; filename="data.bin"
Content-Transfer-Encoding: base64

SGVsbG8g!!!d29y@@bGQ*
AB
--bb64--
"""
    )


def unknown_charset() -> bytes:
    body = "Text in an undeclared charset: naïve café.\n".encode()
    head = _crlf(
        """\
From: Odd Mailer <odd@example.com>
To: bob@example.org
Subject: Unknown charset
Date: Mon, 18 Mar 2024 12:00:00 +0000
Message-ID: <x-unknown@example.com>
MIME-Version: 1.0
Content-Type: text/plain; charset="x-unknown"
Content-Transfer-Encoding: 8bit

"""
    )
    return head + _crlf_bytes(body)


def missing_date() -> bytes:
    return _crlf(
        """\
From: Draft Writer <drafts@example.com>
To: bob@example.org
Subject: No date here
Message-ID: <no-date@example.com>
MIME-Version: 1.0
Content-Type: text/plain; charset=us-ascii

This message has no Date header.
"""
    )


def garbage_date() -> bytes:
    return _crlf(
        """\
From: Clock Broken <clock@example.com>
To: bob@example.org
Subject: Garbage date
Date: the day after tomorrow, around noon
Message-ID: <garbage-date@example.com>
MIME-Version: 1.0
Content-Type: text/plain; charset=us-ascii

The Date header is garbage.
"""
    )


def utf8_8bit_headers() -> bytes:
    # RFC 6532 style: raw UTF-8 in the headers, no encoded words.
    head = """\
From: Jürgen Groß <juergen@example.de>
To: Zoë <zoe@example.ie>
Subject: Grüße aus Köln ☕
Date: Tue, 19 Mar 2024 08:15:00 +0100
Message-ID: <utf8-hdr@example.de>
MIME-Version: 1.0
Content-Type: text/plain; charset=utf-8
Content-Transfer-Encoding: 8bit

Schöne Grüße aus Köln!
"""
    return _crlf_bytes(head.encode("utf-8"))


_BUILDERS: dict[str, Callable[[], bytes]] = {
    "plain_ascii": plain_ascii,
    "alternative": alternative,
    "nested_mixed": nested_mixed,
    "rfc2231_utf8": rfc2231_utf8,
    "rfc2231_latin1": rfc2231_latin1,
    "rfc2047_filename": rfc2047_filename,
    "headers_latin1": headers_latin1,
    "headers_cp1252": headers_cp1252,
    "headers_koi8r": headers_koi8r,
    "headers_sjis": headers_sjis,
    "qp_iso8859_15": qp_iso8859_15,
    "base64_utf8": base64_utf8,
    "inline_image": inline_image,
    "threaded_reply": threaded_reply,
    "forwarded_rfc822": forwarded_rfc822,
    "broken_boundary": broken_boundary,
    "invalid_base64": invalid_base64,
    "unknown_charset": unknown_charset,
    "missing_date": missing_date,
    "garbage_date": garbage_date,
    "utf8_8bit_headers": utf8_8bit_headers,
}


def corpus() -> dict[str, bytes]:
    """Every corpus message: name → raw bytes (built fresh on each call)."""
    return {name: build() for name, build in _BUILDERS.items()}


def _facts(
    subject: str,
    sender: str,
    from_email: str,
    *,
    to: list[str] | None = None,
    date: str | None,
    text: str,
    html: str | None = None,
    attachments: list[str] | None = None,
    defects: bool = False,
) -> dict:
    return {
        "subject": subject,
        "from": sender,
        "from_email": from_email,
        "to": to if to is not None else ["bob@example.org"],
        "date": date,
        "text": text,
        "html": html,
        "attachments": attachments or [],
        "defects": defects,
    }


EXPECTED: dict[str, dict] = {
    "plain_ascii": _facts(
        "Lunch on Friday?",
        "Alice Example <alice@example.com>",
        "alice@example.com",
        to=["Bob Builder <bob@example.org>"],
        date="2024-03-05T09:15:00+01:00",
        text="are you free for lunch on Friday at noon?",
    ),
    "alternative": _facts(
        "Quarterly numbers",
        "Alice Example <alice@example.com>",
        "alice@example.com",
        to=["bob@example.org", "Carol C. <carol@example.net>"],
        date="2024-03-06T17:30:45-05:00",
        text="the quarterly numbers are attached — net revenue grew 12 %.",
        html="net revenue grew <b>12&nbsp;%</b>",
    ),
    "nested_mixed": _facts(
        "Report attached",
        "Alice Example <alice@example.com>",
        "alice@example.com",
        to=["Bob Builder <bob@example.org>"],
        date="2024-03-07T08:00:00+00:00",
        text="Please find the report attached.",
        html="<p>Please find the <i>report</i> attached.</p>",
        attachments=["report.pdf"],
    ),
    "rfc2231_utf8": _facts(
        "Bericht",
        "Juergen Test <juergen@example.de>",
        "juergen@example.de",
        date="2024-03-08T10:00:00+01:00",
        text="Anbei der Bericht.",
        attachments=["Bericht März.pdf"],
    ),
    "rfc2231_latin1": _facts(
        "Resume",
        "Marie Dupont <marie@example.fr>",
        "marie@example.fr",
        date="2024-03-08T11:00:00+01:00",
        text="Voici le document.",
        attachments=["Résumé détaillé.txt"],
    ),
    "rfc2047_filename": _facts(
        "Overview",
        "Bob Builder <bob@example.org>",
        "bob@example.org",
        to=["alice@example.com"],
        date="2024-03-11T14:22:10+01:00",
        text="See attachment.",
        attachments=["Übersicht 2024 – Q1.xlsx"],
    ),
    "headers_latin1": _facts(
        "Réunion à Zürich",
        "François Müller <francois@example.ch>",
        "francois@example.ch",
        date="2024-03-12T12:00:00+00:00",
        text="Bonjour, la réunion a lieu à Zürich.",
    ),
    "headers_cp1252": _facts(
        "Preis: 20 € – „Angebot“",
        "Zoë O’Brien <zoe@example.ie>",
        "zoe@example.ie",
        date="2024-03-12T12:00:00+00:00",
        text="Der Preis beträgt 20 € – ein „gutes“ Angebot.",
    ),
    "headers_koi8r": _facts(
        "Привет из Москвы",
        "Иван Петров <ivan@example.ru>",
        "ivan@example.ru",
        date="2024-03-12T12:00:00+00:00",
        text="Здравствуйте! Встреча завтра в 10:00.",
    ),
    "headers_sjis": _facts(
        "会議の件について",
        "山田太郎 <yamada@example.jp>",
        "yamada@example.jp",
        date="2024-03-12T12:00:00+00:00",
        text="明日の会議は十時からです。",
    ),
    "qp_iso8859_15": _facts(
        "Prix",
        "Marie Dupont <marie@example.fr>",
        "marie@example.fr",
        date="2024-03-13T09:00:00+01:00",
        text="Le prix est de 15 € pour l'œuvre complète.",
    ),
    "base64_utf8": _facts(
        "Grüße 👋",
        "Alice Example <alice@example.com>",
        "alice@example.com",
        date="2024-03-14T16:45:00+09:00",
        text="Grüße 👋 — 你好，世界 — Ελληνικά.",
    ),
    "inline_image": _facts(
        "Our new logo",
        "Newsletter <news@example.com>",
        "news@example.com",
        date="2024-03-15T07:30:00+00:00",
        text="Our new logo is here.",
        html='<img src="cid:logo.123@example.com">',
        attachments=["logo.png"],
    ),
    "threaded_reply": _facts(
        "Re: Lunch on Friday?",
        "Builder, Bob <bob@example.org>",
        "bob@example.org",
        to=["Alice Example <alice@example.com>"],
        date="2024-03-05T10:02:33+01:00",
        text="Sure, see you there.",
    ),
    "forwarded_rfc822": _facts(
        "Fwd: Lunch on Friday?",
        "Bob Builder <bob@example.org>",
        "bob@example.org",
        to=["carol@example.net"],
        date="2024-03-05T11:00:00+01:00",
        text="Forwarding Alice's message.",
        attachments=["lunch.eml"],
    ),
    "broken_boundary": _facts(
        "Broken boundary",
        "Broken Mailer <noreply@example.com>",
        "noreply@example.com",
        date="2024-03-16T03:00:00+00:00",
        text="The visible text of a broken message.",
        defects=True,
    ),
    "invalid_base64": _facts(
        "Invalid base64",
        "Alice Example <alice@example.com>",
        "alice@example.com",
        date="2024-03-17T12:00:00+00:00",
        text="The attachment below is damaged.",
        attachments=["data.bin"],
        defects=True,
    ),
    "unknown_charset": _facts(
        "Unknown charset",
        "Odd Mailer <odd@example.com>",
        "odd@example.com",
        date="2024-03-18T12:00:00+00:00",
        text="Text in an undeclared charset: naïve café.",
        defects=True,
    ),
    "missing_date": _facts(
        "No date here",
        "Draft Writer <drafts@example.com>",
        "drafts@example.com",
        date=None,
        text="This message has no Date header.",
    ),
    "garbage_date": _facts(
        "Garbage date",
        "Clock Broken <clock@example.com>",
        "clock@example.com",
        date=None,
        text="The Date header is garbage.",
        defects=True,
    ),
    "utf8_8bit_headers": _facts(
        "Grüße aus Köln ☕",
        "Jürgen Groß <juergen@example.de>",
        "juergen@example.de",
        to=["Zoë <zoe@example.ie>"],
        date="2024-03-19T08:15:00+01:00",
        text="Schöne Grüße aus Köln!",
    ),
}

# Extra facts some tests check beyond the common keys.
THREAD_FACTS = {
    "message_id": "<reply-1@example.org>",
    "in_reply_to": "<plain-ascii-1@example.com>",
    "references": ["<thread-0@example.com>", "<plain-ascii-1@example.com>"],
    "cc": ["carol@example.net", "Danièl <daniel@example.nl>"],
    "reply_to": ["list@example.org"],
}
