"""A deterministic generator of varied, realistic messages for benchmarks.

``generate(n, seed)`` yields ``n`` raw RFC 5322 messages (CRLF line ends)
averaging about 22 KB: mostly multipart/alternative text + HTML, some plain
text only, a quarter with one or two base64 attachments of binary-ish bytes,
and a mix of languages and charsets (UTF-8, ISO-8859-1/-15, windows-1252,
KOI8-R, Shift_JIS) in quoted-printable, base64 and 8bit, with RFC 2047
encoded headers and RFC 2231 encoded file names. The same ``(n, seed)``
always yields the same bytes.

Run ``python bench/generate.py N [SEED]`` to print statistics.
"""

from __future__ import annotations

import base64
import datetime as dt
import quopri
import random
import sys
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from email.utils import format_datetime
from urllib.parse import quote

__all__ = ["generate"]


@dataclass(frozen=True)
class _Lang:
    words: tuple[str, ...]
    names: tuple[str, ...]
    domain: str
    # (charset, body transfer encoding) pairs this language is sent in.
    encodings: tuple[tuple[str, str], ...]
    filenames: tuple[str, ...]


_LANGS = (
    _Lang(
        words=tuple(
            "the of and to in is that for it as was with be by on not he this are or "
            "his from at which but have an they you were her she there been one all "
            "would their we him has when who will more no if out so said what up its "
            "about into than them can only other new some could time these two may then "
            "do first any my now such like our over man me even most made after also "
            "report quarter budget meeting schedule project invoice delivery customer".split()
        ),
        names=("Alice Walker", "Bob Builder", "Carol Smith", "Dave O'Neil", "Eve Adams"),
        domain="example.com",
        encodings=(("utf-8", "quoted-printable"), ("us-ascii", "7bit"), ("utf-8", "base64")),
        filenames=("report.pdf", "invoice-2024-03.pdf", "photo.jpg", "data export.csv"),
    ),
    _Lang(
        words=tuple(
            "der die und in den von zu das mit sich des auf für ist im dem nicht ein "
            "Die eine als auch es an werden aus er hat dass sie nach wird bei einer um "
            "über Größe Straße Grüße Bericht März Übersicht Änderung Prüfung schön "
            "möglich Bürger Käse Mädchen Fußball Öffnungszeiten Rechnung Lieferung".split()
        ),
        names=("Jürgen Groß", "Käthe Müller", "Björn Schäfer", "Uwe Öztürk"),
        domain="example.de",
        encodings=(
            ("iso-8859-1", "quoted-printable"),
            ("utf-8", "quoted-printable"),
            ("utf-8", "8bit"),
        ),
        filenames=("Bericht März.pdf", "Übersicht.xlsx", "Rechnung Nr. 4711.pdf"),
    ),
    _Lang(
        words=tuple(
            "le de un être et à il avoir ne je son que se qui ce dans en du elle au "
            "pour pas que vous par sur faire plus dire me on mon lui nous comme mais "
            "été déjà très où même œuvre cœur prix 15 € réunion français hôtel "
            "café naïve élève château garçon façade Noël fenêtre".split()
        ),
        names=("François Dupont", "Hélène Girard", "Zoë Lefèvre", "Jérôme Bœuf"),
        domain="example.fr",
        encodings=(
            ("iso-8859-15", "quoted-printable"),
            ("windows-1252", "quoted-printable"),
            ("utf-8", "base64"),
        ),
        filenames=("Résumé détaillé.docx", "facture.pdf", "présentation été.pptx"),
    ),
    _Lang(
        words=tuple(
            "и в не на я что тот быть с а весь это как она по но они к у ты из мы за "
            "вы так же от сказать этот который мочь человек о один еще бы такой только "
            "отчет встреча бюджет проект счет доставка Москва завтра сегодня".split()
        ),
        names=("Иван Петров", "Мария Иванова", "Алексей Смирнов"),
        domain="example.ru",
        encodings=(("koi8-r", "base64"), ("utf-8", "base64"), ("koi8-r", "8bit")),
        filenames=("отчет.pdf", "счет-фактура.xlsx"),
    ),
    _Lang(
        words=tuple(
            "会議 報告 予算 明日 今日 資料 確認 お願い します ありがとう ございます "
            "よろしく 東京 大阪 プロジェクト 納品 請求書 担当 部長 時間 場所 変更 "
            "お世話に なって おります の を に は が で と も".split()
        ),
        names=("山田太郎", "佐藤花子", "鈴木一郎"),
        domain="example.jp",
        encodings=(("shift_jis", "base64"), ("utf-8", "base64")),
        filenames=("資料.pdf", "請求書.xlsx"),
    ),
)
# English dominates real mailboxes.
_LANG_WEIGHTS = (45, 20, 15, 10, 10)

_ATTACHMENT_TYPES = (
    ("application/pdf", b"%PDF-1.5\n"),
    ("image/jpeg", b"\xff\xd8\xff\xe0\x00\x10JFIF"),
    ("application/vnd.openxmlformats-officedocument.spreadsheetml.sheet", b"PK\x03\x04"),
    ("application/octet-stream", b""),
)


def _sentence(rng: random.Random, lang: _Lang) -> str:
    words = rng.choices(lang.words, k=rng.randint(6, 16))
    sep = "" if lang.domain.endswith(".jp") else " "
    text = sep.join(words)
    return text[:1].upper() + text[1:] + ("。" if sep == "" else ".")


def _paragraphs(rng: random.Random, lang: _Lang, target_chars: int) -> list[str]:
    paras: list[str] = []
    size = 0
    while size < target_chars:
        sep = "" if lang.domain.endswith(".jp") else " "
        para = sep.join(_sentence(rng, lang) for _ in range(rng.randint(2, 6)))
        paras.append(para)
        size += len(para)
    return paras


def _encoded_word(text: str, charset: str) -> str:
    if text.isascii():
        return text
    if charset in ("us-ascii", "koi8-r", "shift_jis"):
        charset = "utf-8" if charset == "us-ascii" else charset
    # One encoded word per ~30 characters keeps header lines under 78 chars.
    words = []
    for i in range(0, len(text), 30):
        chunk = text[i : i + 30].encode(charset, "replace")
        words.append(f"=?{charset}?B?{base64.b64encode(chunk).decode()}?=")
    return "\r\n ".join(words)


def _body(data: str, charset: str, cte: str) -> tuple[str, bytes]:
    """(header lines, encoded body bytes) for one text part."""
    raw = data.encode(charset, "replace")
    if cte == "base64":
        encoded = base64.encodebytes(raw).replace(b"\n", b"\r\n")
    elif cte == "quoted-printable":
        encoded = quopri.encodestring(raw).replace(b"\n", b"\r\n")
    else:  # 7bit / 8bit: lines as they are
        encoded = raw.replace(b"\n", b"\r\n") + b"\r\n"
    return f"charset={charset}\r\nContent-Transfer-Encoding: {cte}", encoded


def _html(paras: list[str], subject: str) -> str:
    body = "\n".join(f"<p>{p}</p>" for p in paras)
    return (
        '<!DOCTYPE html>\n<html><head><meta charset="utf-8"><title>'
        f"{subject}</title>\n<style>body{{font-family:Arial,sans-serif;color:#222}}"
        "p{margin:0 0 12px 0;line-height:1.4}</style></head>\n"
        f'<body><table width="100%" cellpadding="0" cellspacing="0"><tr><td>\n{body}\n'
        "</td></tr></table></body></html>\n"
    )


def _attachment(rng: random.Random, lang: _Lang, boundary: str) -> bytes:
    ctype, magic = rng.choice(_ATTACHMENT_TYPES)
    name = rng.choice(lang.filenames)
    size = int(rng.triangular(4_000, 50_000, 12_000))
    # Binary-ish: random bytes with runs, like compressed data with headers.
    chunks = [magic]
    while sum(map(len, chunks)) < size:
        if rng.random() < 0.2:
            chunks.append(bytes([rng.randrange(256)]) * rng.randint(4, 64))
        else:
            chunks.append(rng.randbytes(rng.randint(64, 512)))
    data = b"".join(chunks)[:size]
    if name.isascii():
        params = f'name="{name}"', f'filename="{name}"'
    else:
        encoded = quote(name, safe="")
        params = f"name*=UTF-8''{encoded}", f"filename*=UTF-8''{encoded}"
    head = (
        f"--{boundary}\r\nContent-Type: {ctype};\r\n {params[0]}\r\n"
        f"Content-Disposition: attachment;\r\n {params[1]}\r\n"
        "Content-Transfer-Encoding: base64\r\n\r\n"
    )
    return head.encode() + base64.encodebytes(data).replace(b"\n", b"\r\n")


def _message(rng: random.Random, index: int, seed: int) -> bytes:
    lang = rng.choices(_LANGS, weights=_LANG_WEIGHTS)[0]
    charset, cte = rng.choice(lang.encodings)
    sender = rng.choice(lang.names)
    recipients = rng.sample(_LANGS[0].names + lang.names, k=rng.randint(1, 3))
    subject = " ".join(rng.choices(lang.words, k=rng.randint(3, 8)))[:60]
    date = dt.datetime(2024, 1, 1, tzinfo=dt.UTC) + dt.timedelta(seconds=rng.randrange(31_536_000))
    date = date.astimezone(dt.timezone(dt.timedelta(hours=rng.choice((-5, 0, 1, 2, 3, 9)))))

    def addr(name: str) -> str:
        local = f"user{zlib.crc32(name.encode()) % 1000}"  # hash() is salted per process if not name.isascii() else name.split()[0].lower()
        local = "".join(c for c in local if c.isalnum())
        return f"{_encoded_word(name, charset)} <{local}@{lang.domain}>"

    headers = [
        f"Received: from mx{rng.randint(1, 9)}.{lang.domain} (mx.{lang.domain} [192.0.2.{rng.randint(1, 254)}])\r\n"
        f"\tby mail.example.org with ESMTPS id {rng.getrandbits(40):x}; {format_datetime(date)}",
        f"From: {addr(sender)}",
        "To: " + ",\r\n ".join(addr(r) for r in recipients),
        f"Subject: {_encoded_word(subject, charset)}",
        f"Date: {format_datetime(date)}",
        f"Message-ID: <{index}.{seed}.{rng.getrandbits(48):x}@{lang.domain}>",
        "MIME-Version: 1.0",
    ]
    if rng.random() < 0.3:
        headers.append(f"In-Reply-To: <{rng.getrandbits(48):x}@{lang.domain}>")

    with_attachment = rng.random() < 0.25
    plain_only = not with_attachment and rng.random() < 0.1
    # Sized so the overall mean lands near 22 KB.
    paras = _paragraphs(
        rng, lang, rng.randint(3_000, 6_500) // (2 if lang.domain.endswith(".jp") else 1)
    )
    text = "\n\n".join(paras) + "\n"
    text_params, text_bytes = _body(text, charset, cte)
    text_part = f"Content-Type: text/plain; {text_params}\r\n\r\n".encode() + text_bytes

    if plain_only:
        head = "\r\n".join(headers) + f"\r\nContent-Type: text/plain; {text_params}\r\n\r\n"
        return head.encode() + text_bytes

    html_params, html_bytes = _body(_html(paras, subject), charset, cte)
    html_part = f"Content-Type: text/html; {html_params}\r\n\r\n".encode() + html_bytes
    alt_b = f"----=_Alt_{rng.getrandbits(64):016x}"
    alternative = (
        f"--{alt_b}\r\n".encode()
        + text_part
        + f"\r\n--{alt_b}\r\n".encode()
        + html_part
        + f"\r\n--{alt_b}--\r\n".encode()
    )
    if not with_attachment:
        head = (
            "\r\n".join(headers)
            + f'\r\nContent-Type: multipart/alternative; boundary="{alt_b}"\r\n\r\n'
        )
        return head.encode() + alternative

    mix_b = f"----=_Mix_{rng.getrandbits(64):016x}"
    parts = [
        f'--{mix_b}\r\nContent-Type: multipart/alternative; boundary="{alt_b}"\r\n\r\n'.encode()
        + alternative
    ]
    parts += [_attachment(rng, lang, mix_b) for _ in range(1 if rng.random() < 0.8 else 2)]
    head = "\r\n".join(headers) + f'\r\nContent-Type: multipart/mixed; boundary="{mix_b}"\r\n\r\n'
    return head.encode() + b"".join(parts) + f"--{mix_b}--\r\n".encode()


def generate(n: int, seed: int = 1) -> Iterator[bytes]:
    """Yield ``n`` raw messages; the same ``(n, seed)`` always yields the same bytes."""
    rng = random.Random(seed)
    for index in range(n):
        yield _message(rng, index, seed)


def _stats(n: int, seed: int) -> str:
    sizes: list[int] = []
    with_attachments = 0
    for raw in generate(n, seed):
        sizes.append(len(raw))
        with_attachments += b"Content-Disposition: attachment" in raw
    if not sizes:
        return "count: 0"
    mean = sum(sizes) / len(sizes)
    return (
        f"count: {len(sizes)}\n"
        f"mean size: {mean / 1024:.1f} KiB ({mean:.0f} bytes)\n"
        f"min/max size: {min(sizes)} / {max(sizes)} bytes\n"
        f"with attachments: {with_attachments / len(sizes):.1%}"
    )


if __name__ == "__main__":
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
    seed_arg = int(sys.argv[2]) if len(sys.argv) > 2 else 1
    print(_stats(count, seed_arg))
