"""mailsessions.mime: decoding real-world and hostile messages.

The corpus (tests/messages.py) is the contract: every message decodes to its
EXPECTED facts. Malformed input must be described in ``defects``, never
raised. Hypothesis fuzzes random and mutated messages (bounded so the file
runs in seconds).
"""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mailsessions.mime import ParsedMessage, parse_message, safe_filename
from tests import messages
from tests.messages import EXPECTED, PDF_BYTES, PNG_BYTES, corpus

CORPUS = corpus()


def test_every_corpus_message_has_expected_facts() -> None:
    assert set(CORPUS) == set(EXPECTED)
    assert len(CORPUS) >= 20


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_corpus_message_decodes_to_expected_facts(name: str) -> None:
    expected = EXPECTED[name]
    parsed = parse_message(CORPUS[name])

    assert parsed.subject == expected["subject"]
    assert parsed.from_addr == expected["from"]
    assert parsed.from_email == expected["from_email"]
    assert parsed.to == expected["to"]
    if expected["date"] is None:
        assert parsed.date is None
    else:
        assert parsed.date is not None
        assert parsed.date.isoformat() == expected["date"]
    assert expected["text"] in parsed.text_body
    if expected["html"] is None:
        assert parsed.html_body == ""
    else:
        assert expected["html"] in parsed.html_body
    assert [a.filename for a in parsed.attachments] == expected["attachments"]
    if expected["defects"]:
        assert parsed.defects, "a malformed message must report what went wrong"
    else:
        assert parsed.defects == []


def test_threading_and_address_headers() -> None:
    parsed = parse_message(CORPUS["threaded_reply"])
    facts = messages.THREAD_FACTS
    assert parsed.message_id == facts["message_id"]
    assert parsed.in_reply_to == facts["in_reply_to"]
    assert parsed.references == facts["references"]
    assert parsed.cc == facts["cc"]
    assert parsed.reply_to == facts["reply_to"]


def test_attachment_content_is_decoded_exactly() -> None:
    parsed = parse_message(CORPUS["nested_mixed"])
    (att,) = parsed.attachments
    assert att.content == PDF_BYTES
    assert att.size == len(PDF_BYTES)
    assert att.content_type == "application/pdf"
    assert not att.inline and not att.too_large

    latin = parse_message(CORPUS["rfc2231_latin1"]).attachments[0]
    assert latin.content is not None
    assert latin.content.decode("iso-8859-1") == "Un résumé détaillé.\r\n"
    # A text/plain attachment must not be taken as the body.
    assert parse_message(CORPUS["rfc2231_latin1"]).text_body.strip() == "Voici le document."


def test_inline_image_keeps_content_id_and_inline_flag() -> None:
    parsed = parse_message(CORPUS["inline_image"])
    (img,) = parsed.attachments
    assert img.content_id == "logo.123@example.com"
    assert img.inline is True
    assert img.content == PNG_BYTES
    assert f"cid:{img.content_id}" in parsed.html_body


def test_forwarded_message_is_an_attachment_with_its_text() -> None:
    parsed = parse_message(CORPUS["forwarded_rfc822"])
    (fwd,) = parsed.attachments
    assert fwd.content_type == "message/rfc822"
    assert fwd.content is not None
    assert b"Subject: Lunch on Friday?" in fwd.content
    assert parse_message(fwd.content).subject == "Lunch on Friday?"
    # The forwarded body must not replace the outer one.
    assert parsed.text_body.strip() == "Forwarding Alice's message."


def test_bodies_use_lf_line_ends_across_encodings() -> None:
    for name in ("alternative", "headers_koi8r", "base64_utf8", "utf8_8bit_headers"):
        assert "\r" not in parse_message(CORPUS[name]).text_body, name


@pytest.mark.parametrize(
    ("name", "needle"),
    [
        ("broken_boundary", "boundary"),
        ("invalid_base64", "base64"),
        ("unknown_charset", "x-unknown"),
        ("garbage_date", "Date"),
    ],
)
def test_defects_say_what_went_wrong(name: str, needle: str) -> None:
    defects = parse_message(CORPUS[name]).defects
    assert any(needle in d for d in defects), defects


def test_text_in_wrong_charset_is_replaced_and_flagged() -> None:
    raw = (
        b"Subject: x\r\nContent-Type: text/plain; charset=utf-8\r\n"
        b"Content-Transfer-Encoding: 8bit\r\n\r\ncaf\xe9 \xff\xfe ok\r\n"
    )
    parsed = parse_message(raw)
    assert parsed.text_body.startswith("caf")
    assert parsed.text_body.rstrip().endswith("ok")
    assert any("utf-8" in d for d in parsed.defects)


def test_undeclared_8bit_headers_fall_back_to_windows_1252() -> None:
    raw = b"Subject: Caf\xe9 \x80\r\nFrom: Ren\xe9 <rene@example.fr>\r\n\r\nbody\r\n"
    parsed = parse_message(raw)
    assert parsed.subject == "Café €"
    assert parsed.from_addr == "René <rene@example.fr>"


def test_encoded_word_in_unknown_charset_is_flagged() -> None:
    raw = b"Subject: =?x-klingon?Q?Qapla=E9?=\r\n\r\nbody\r\n"
    parsed = parse_message(raw)
    assert "Qapla" in parsed.subject
    assert any("x-klingon" in d for d in parsed.defects)


def test_undecodable_encoded_word_does_not_raise() -> None:
    raw = b"Subject: =?utf-8?B?###?=\r\n\r\nbody\r\n"
    parsed = parse_message(raw)
    assert parsed.text_body.strip() == "body"


def test_minus_zero_date_is_aware_utc() -> None:
    parsed = parse_message(b"Date: Tue, 05 Mar 2024 09:15:00 -0000\r\n\r\nx\r\n")
    assert parsed.date == dt.datetime(2024, 3, 5, 9, 15, tzinfo=dt.UTC)


@pytest.mark.parametrize(
    "value", ["Mon, 99 Foo 99999 99:99:99 +9999", "", "0", "Tue, 31 Feb 2024 25:00:00 +0100"]
)
def test_garbage_dates_never_raise(value: str) -> None:
    parsed = parse_message(f"Date: {value}\r\n\r\nx\r\n".encode())
    assert parsed.date is None or parsed.date.tzinfo is not None


# --- size cap ----------------------------------------------------------------------


def test_attachment_over_the_cap_keeps_metadata_only() -> None:
    parsed = parse_message(CORPUS["nested_mixed"], max_attachment_size=len(PDF_BYTES) - 1)
    (att,) = parsed.attachments
    assert att.too_large is True
    assert att.content is None
    assert att.size == len(PDF_BYTES)
    assert att.filename == "report.pdf"


def test_attachment_at_the_cap_is_kept() -> None:
    (att,) = parse_message(CORPUS["nested_mixed"], max_attachment_size=len(PDF_BYTES)).attachments
    assert att.too_large is False
    assert att.content == PDF_BYTES


def test_save_attachments_false_keeps_metadata_only() -> None:
    (att,) = parse_message(CORPUS["nested_mixed"], save_attachments=False).attachments
    assert att.content is None
    assert att.too_large is False
    assert att.size == len(PDF_BYTES)


# --- hostile structure ---------------------------------------------------------------


def _nested(levels: int) -> bytes:
    head = b"Subject: deep\r\n"
    parts = b"".join(
        b'Content-Type: multipart/mixed; boundary="b%d"\r\n\r\n--b%d\r\n' % (i, i)
        for i in range(levels)
    )
    return head + parts + b"Content-Type: text/plain\r\n\r\ninnermost\r\n"


def test_nesting_beyond_the_limit_is_cut_and_reported() -> None:
    parsed = parse_message(_nested(60))
    assert parsed.subject == "deep"
    assert "innermost" not in parsed.text_body
    assert any("nested deeper than 50" in d for d in parsed.defects)


def test_nesting_within_the_limit_is_walked() -> None:
    parsed = parse_message(_nested(40))
    assert parsed.text_body.strip() == "innermost"


def test_nesting_that_breaks_the_stdlib_parser_keeps_headers() -> None:
    parsed = parse_message(_nested(3000))
    assert parsed.subject == "deep"
    assert any("nested too deeply" in d for d in parsed.defects)


def test_huge_header_line() -> None:
    subject = "x" * 1_000_000
    parsed = parse_message(f"Subject: {subject}\r\nFrom: {'a' * 200_000}@x\r\n\r\nb\r\n".encode())
    assert parsed.subject == subject


def test_deeply_nested_address_comments() -> None:
    raw = b"From: " + b"(" * 5000 + b"a@b\r\nTo: " + b"<" * 5000 + b"\r\n\r\nbody\r\n"
    parsed = parse_message(raw)
    assert parsed.text_body.strip() == "body"


def test_non_text_charsets_do_not_raise() -> None:
    for charset in (
        b"base64",
        b"rot13",
        b"zlib",
        b"undefined",
        b"idna",
        b"utf-7",
        b"unicode_escape",
    ):
        raw = b"Content-Type: text/plain; charset=" + charset + b"\r\n\r\n+2AA- \\ud800 \xff\r\n"
        parsed = parse_message(raw)
        _assert_storable(parsed)


# --- fuzzing ----------------------------------------------------------------------------


def _assert_storable(parsed: ParsedMessage) -> None:
    """Invariants every result holds, whatever the input."""
    assert isinstance(parsed, ParsedMessage)
    strings = [
        parsed.message_id,
        parsed.subject,
        parsed.from_addr,
        parsed.from_email,
        parsed.in_reply_to,
        parsed.text_body,
        parsed.html_body,
        *parsed.to,
        *parsed.cc,
        *parsed.reply_to,
        *parsed.references,
        *parsed.defects,
    ]
    for att in parsed.attachments:
        strings += [att.filename, att.content_type, att.content_id]
        if att.content is not None:
            assert att.size == len(att.content)
    for value in strings:
        assert isinstance(value, str)
        value.encode("utf-8")  # no lone surrogates
        assert "\x00" not in value
    assert parsed.date is None or parsed.date.tzinfo is not None
    # The last-resort guard in parse_message is a safety net, not a code path.
    assert not any("could not be fully decoded" in d for d in parsed.defects), parsed.defects


_FUZZ = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    derandomize=True,
)


@_FUZZ
@given(st.binary(max_size=4096))
def test_fuzz_random_bytes(raw: bytes) -> None:
    _assert_storable(parse_message(raw))


_HEADER_LINES = st.sampled_from(
    [
        b"Content-Type: multipart/mixed; boundary=x\r\n",
        b'Content-Type: multipart/alternative; boundary="x"\r\n',
        b"Content-Type: text/plain; charset=x-unknown\r\n",
        b"Content-Type: text/html; charset*=utf-8''%FF\r\n",
        b"Content-Type: message/rfc822\r\n",
        b"Content-Transfer-Encoding: base64\r\n",
        b"Content-Transfer-Encoding: quoted-printable\r\n",
        b"Content-Transfer-Encoding: x-uuencode\r\n",
        b"Content-Disposition: attachment; filename*0*=utf-8''%C3; filename*1*=%A4\r\n",
        b'Content-Disposition: inline; filename="=?utf-8?B?w6Q=?="\r\n',
        b"Subject: =?utf-8?Q?=C3?= =?koi8-r?B?8NLJ?= \xff\xfe\r\n",
        b'From: "=?utf-8?q?x?=" <a@b>, (((c\r\n',
        b"Date: Mon, 32 Jan 99999 25:61:61 +9999\r\n",
        b"\r\n",
        b"--x\r\n",
        b"--x--\r\n",
        b"SGVsbG8=!!\r\n",
        b"=E9=\r\n",
        b"\xc3\xa4\x00\r\n",
    ]
)


@_FUZZ
@given(st.lists(_HEADER_LINES, max_size=40))
def test_fuzz_mime_shaped_lines(lines: list[bytes]) -> None:
    _assert_storable(parse_message(b"".join(lines)))


@_FUZZ
@given(
    name=st.sampled_from(sorted(CORPUS)),
    edits=st.lists(
        st.tuples(
            st.sampled_from(["delete", "insert", "replace", "truncate", "duplicate"]),
            st.floats(min_value=0, max_value=1),
            st.binary(min_size=1, max_size=16),
        ),
        min_size=1,
        max_size=6,
    ),
)
def test_fuzz_mutated_corpus(name: str, edits: list[tuple[str, float, bytes]]) -> None:
    raw = bytearray(CORPUS[name])
    for op, where, data in edits:
        pos = int(where * len(raw))
        if op == "delete":
            del raw[pos : pos + len(data)]
        elif op == "insert":
            raw[pos:pos] = data
        elif op == "replace":
            raw[pos : pos + len(data)] = data
        elif op == "truncate":
            del raw[pos:]
        else:
            raw[pos:pos] = raw[pos : pos + 200]
    _assert_storable(parse_message(bytes(raw)))


# --- safe_filename ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("../../etc/passwd", "passwd"),
        ("/abs/path", "path"),
        ("C:\\evil\\x.exe", "x.exe"),
        ("re\x00port.pdf", "report.pdf"),
        ("a\x07b\x1fc.txt", "abc.txt"),
        ("CON.txt", "_CON.txt"),
        ("nul", "_nul"),
        ("com1.tar.gz", "_com1.tar.gz"),
        ("LPT9", "_LPT9"),
        ("CONSOLE.txt", "CONSOLE.txt"),
        ("..", "attachment"),
        (".", "attachment"),
        ("", "attachment"),
        ("   ", "attachment"),
        ("dir/", "attachment"),
        (".bashrc", "bashrc"),
        ("...hidden.txt", "hidden.txt"),
        ("Bericht März.pdf", "Bericht März.pdf"),
        ("отчет.pdf", "отчет.pdf"),
        ("資料.pdf", "資料.pdf"),
        ('a<b>c:d"e|f?g*h.txt', "abcdefgh.txt"),
        ("invoice\u202etxt.exe", "invoicetxt.exe"),
        ("trailing. ", "trailing"),
    ],
)
def test_safe_filename(name: str, expected: str) -> None:
    assert safe_filename(name) == expected


def test_safe_filename_limits_length_keeping_extension() -> None:
    result = safe_filename("x" * 500 + ".pdf")
    assert len(result) <= 150
    assert result.endswith(".pdf")
    assert result.startswith("xxx")

    no_ext = safe_filename("y" * 500)
    assert no_ext == "y" * 150


@given(st.text(max_size=300))
@settings(max_examples=300, deadline=None, derandomize=True)
def test_safe_filename_is_always_safe(name: str) -> None:
    result = safe_filename(name)
    assert result
    assert len(result) <= 150
    assert "/" not in result and "\\" not in result and "\x00" not in result
    assert not result.startswith(".")
    assert result not in (".", "..")
    assert all(ord(c) >= 0x20 for c in result)
    result.encode("utf-8")
    assert result.split(".")[0].upper() not in {"CON", "PRN", "AUX", "NUL", "COM1", "LPT1"}
