"""SMTPBackend against real aiosmtpd servers on loopback (tests/servers/smtp.py).

Personas: alice and bob may log in and send to anyone; recipients whose
address contains "reject" are refused (550), "tempfail" deferred (451).
"""

from __future__ import annotations

import threading
import time
from email.message import EmailMessage
from email.policy import SMTP as SMTP_POLICY

import pytest

from mailsessions.backends import get_backend_class
from mailsessions.backends.base import (
    AuthenticationFailed,
    BackendError,
    ConnectionFailed,
    NotSupported,
    ProtocolError,
    Security,
    ServerConfig,
    TemporaryFailure,
    TLSFailed,
)
from mailsessions.backends.smtp import SMTPBackend
from tests.servers.smtp import USERS, SMTPServer, smtp_config

pytestmark = pytest.mark.timeout(60)


def build_message(
    subject: str = "Hello", body: str = "Hi there.\n", to: str = "bob@example.org"
) -> bytes:
    msg = EmailMessage(policy=SMTP_POLICY)
    msg["From"] = "alice@example.org"
    msg["To"] = to
    msg["Subject"] = subject
    msg["Message-ID"] = f"<{subject.replace(' ', '-')}@test>"
    msg.set_content(body)
    return msg.as_bytes()


def smtp_config_for(host: str, port: int, **overrides) -> ServerConfig:
    """A plain-SMTP config for a port that is not one of the fixture servers."""
    return ServerConfig(host=host, port=port, security=Security.NONE, **overrides)


@pytest.fixture(params=["smtp_noauth", "smtp_auth_starttls", "smtp_ssl"])
def any_server(request: pytest.FixtureRequest) -> SMTPServer:
    server: SMTPServer = request.getfixturevalue(request.param)
    server.clear()
    return server


@pytest.fixture
def noauth(smtp_noauth: SMTPServer) -> SMTPServer:
    smtp_noauth.clear()
    return smtp_noauth


@pytest.fixture
def starttls(smtp_auth_starttls: SMTPServer) -> SMTPServer:
    smtp_auth_starttls.clear()
    return smtp_auth_starttls


@pytest.fixture
def implicit_tls(smtp_ssl: SMTPServer) -> SMTPServer:
    smtp_ssl.clear()
    return smtp_ssl


def test_registry_finds_the_smtp_backend() -> None:
    assert get_backend_class("smtp") is SMTPBackend


def test_send_arrives_byte_for_byte(any_server: SMTPServer) -> None:
    # A line starting with a dot must survive dot-stuffing; non-ASCII body too.
    raw = build_message(body=".leading dot\nGrüße aus Köln\n")
    assert b"\n.leading dot" in raw and not raw.isascii()
    with SMTPBackend(smtp_config(any_server)) as backend:
        result = backend.send(raw, sender="alice@example.org", recipients=["bob@example.org"])

    (received,) = any_server.wait_for(1)
    assert received.content == raw
    assert received.mail_from == "alice@example.org"
    assert received.rcpt_tos == ("bob@example.org",)
    assert result.accepted == ("bob@example.org",)
    assert result.refused == {}
    assert result.reply == "250 2.0.0 OK queued as test-1"
    expects_tls = any_server.security != Security.NONE
    assert received.tls is expects_tls
    assert received.auth_user == ("alice" if any_server.auth_required else None)


def test_bare_line_feeds_are_sent_as_crlf(noauth: SMTPServer) -> None:
    with SMTPBackend(smtp_config(noauth)) as backend:
        backend.send(
            b"Subject: x\n\nline one\nline two\n", sender="a@x.org", recipients=["b@x.org"]
        )
    (received,) = noauth.wait_for(1)
    assert received.content == b"Subject: x\r\n\r\nline one\r\nline two\r\n"


def test_connect_reports_greeting_capabilities_and_tls(starttls: SMTPServer) -> None:
    backend = SMTPBackend(smtp_config(starttls))
    try:
        backend.connect()
        assert backend.greeting.startswith("220 mail.test")
        assert "STARTTLS" not in backend.capabilities  # capabilities after TLS
        assert set(backend.auth_mechanisms) == {"PLAIN", "LOGIN"}
        assert any(cap.startswith("AUTH") for cap in backend.capabilities)
        assert backend.tls is not None
        assert backend.tls.version.startswith("TLSv1.")
        assert backend.tls.verified is False
        assert "localhost" in backend.tls.subject
    finally:
        backend.close()


def test_implicit_tls_reports_tls_info(implicit_tls: SMTPServer) -> None:
    with SMTPBackend(smtp_config(implicit_tls)) as backend:
        assert backend.tls is not None and backend.tls.cipher
        assert "PLAIN" in backend.auth_mechanisms


def test_plain_connection_has_no_tls_info(noauth: SMTPServer) -> None:
    with SMTPBackend(smtp_config(noauth)) as backend:
        assert backend.tls is None
        assert backend.auth_mechanisms == ()


def test_bob_can_log_in_too(starttls: SMTPServer) -> None:
    config = smtp_config(starttls, username="bob", password=USERS["bob"])
    with SMTPBackend(config) as backend:
        backend.send(build_message(), sender="bob@example.org", recipients=["carol@example.org"])
    (received,) = starttls.wait_for(1)
    assert received.auth_user == "bob"


def test_200_messages_use_one_connection(starttls: SMTPServer) -> None:
    with SMTPBackend(smtp_config(starttls)) as backend:
        for n in range(200):
            result = backend.send(
                build_message(subject=f"bulk {n}"),
                sender="alice@example.org",
                recipients=["bob@example.org"],
            )
            assert result.reply == f"250 2.0.0 OK queued as test-{n + 1}"
    received = starttls.wait_for(200)
    assert len(received) == 200
    assert starttls.connections == 1
    assert {m.connection_id for m in received} == {1}


def test_wrong_password_names_the_user_not_the_password(starttls: SMTPServer) -> None:
    config = smtp_config(starttls, password="not-alices-password")
    with pytest.raises(AuthenticationFailed) as caught:
        with SMTPBackend(config):
            pass
    message = str(caught.value)
    assert "alice" in message
    assert "not-alices-password" not in message
    assert "535" in message
    assert caught.value.retryable is False


def test_wrong_password_over_implicit_tls(implicit_tls: SMTPServer) -> None:
    with pytest.raises(AuthenticationFailed, match="authentication failed for user bob"):
        with SMTPBackend(smtp_config(implicit_tls, username="bob", password="nope")):
            pass


@pytest.mark.parametrize("fixture", ["smtp_auth_plain", "smtp_auth_starttls"])
def test_no_login_against_a_server_that_requires_one(
    fixture: str, request: pytest.FixtureRequest
) -> None:
    server: SMTPServer = request.getfixturevalue(fixture)
    server.clear()
    with SMTPBackend(smtp_config(server, username="", password="")) as backend:
        with pytest.raises(AuthenticationFailed) as caught:
            backend.send(
                build_message(), sender="alice@example.org", recipients=["bob@example.org"]
            )
        assert "the server requires authentication: enter a user name and password" in str(
            caught.value
        )
        # The connection is still usable after the refusal.
        assert backend.connected
    assert server.messages == []


def test_login_without_auth_on_offer_says_so(noauth: SMTPServer) -> None:
    with pytest.raises(NotSupported, match="offers no authentication on this connection.*STARTTLS"):
        with SMTPBackend(smtp_config(noauth, username="alice", password="x")):
            pass


def test_starttls_against_the_implicit_tls_port(implicit_tls: SMTPServer) -> None:
    # The client waits for a plaintext greeting the TLS port never sends.
    config = smtp_config(implicit_tls, security=Security.STARTTLS, timeout=1)
    started = time.monotonic()
    with pytest.raises(ConnectionFailed) as caught:
        with SMTPBackend(config):
            pass
    assert time.monotonic() - started < 5
    message = str(caught.value)
    assert "timeout" in message and "choose SSL/TLS" in message


def test_starttls_against_a_server_without_it(noauth: SMTPServer) -> None:
    config = smtp_config(noauth, security=Security.STARTTLS)
    with pytest.raises(
        TLSFailed, match=f"does not offer STARTTLS on port {noauth.port}: choose SSL/TLS"
    ):
        with SMTPBackend(config):
            pass


def test_ssl_against_the_plain_port(noauth: SMTPServer) -> None:
    config = smtp_config(noauth, security=Security.SSL)
    with pytest.raises(TLSFailed, match="does not speak TLS right away.*STARTTLS"):
        with SMTPBackend(config):
            pass


@pytest.mark.parametrize("fixture", ["smtp_ssl", "smtp_auth_starttls"])
def test_verification_on_refuses_the_self_signed_certificate(
    fixture: str, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Make sure no test-wide trust of our cert leaks in from the environment.
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    server: SMTPServer = request.getfixturevalue(fixture)
    server.clear()
    with pytest.raises(TLSFailed, match="self-signed") as caught:
        with SMTPBackend(smtp_config(server, verify_certificate=True)):
            pass
    assert caught.value.retryable is False
    assert server.messages == []


def test_verification_on_succeeds_when_the_certificate_is_trusted(
    implicit_tls: SMTPServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SSL_CERT_FILE", str(implicit_tls.cert.cert))
    with SMTPBackend(smtp_config(implicit_tls, verify_certificate=True)) as backend:
        assert backend.tls is not None and backend.tls.verified is True


def test_verification_off_works_and_says_unverified(implicit_tls: SMTPServer) -> None:
    with SMTPBackend(smtp_config(implicit_tls, verify_certificate=False)) as backend:
        backend.send(build_message(), sender="alice@example.org", recipients=["bob@example.org"])
        assert backend.tls is not None and backend.tls.verified is False
    implicit_tls.wait_for(1)


def test_partly_refused_recipients_are_reported(starttls: SMTPServer) -> None:
    recipients = ["bob@example.org", "reject-me@example.org", "carol@example.org"]
    with SMTPBackend(smtp_config(starttls)) as backend:
        result = backend.send(build_message(), sender="alice@example.org", recipients=recipients)
    assert result.accepted == ("bob@example.org", "carol@example.org")
    assert list(result.refused) == ["reject-me@example.org"]
    assert result.refused["reject-me@example.org"].startswith("550 5.1.1")
    (received,) = starttls.wait_for(1)
    assert received.rcpt_tos == ("bob@example.org", "carol@example.org")


def test_all_recipients_refused_names_each(noauth: SMTPServer) -> None:
    recipients = ["reject-a@example.org", "reject-b@example.org"]
    with SMTPBackend(smtp_config(noauth)) as backend:
        with pytest.raises(ProtocolError) as caught:
            backend.send(build_message(), sender="alice@example.org", recipients=recipients)
        message = str(caught.value)
        assert "reject-a@example.org (550 5.1.1" in message
        assert "reject-b@example.org (550 5.1.1" in message
        assert caught.value.retryable is False
        # After RSET the same connection delivers the next message.
        result = backend.send(
            build_message(), sender="alice@example.org", recipients=["bob@example.org"]
        )
        assert result.accepted == ("bob@example.org",)
    (received,) = noauth.wait_for(1)
    assert received.rcpt_tos == ("bob@example.org",)
    assert noauth.connections == 1


def test_temporary_refusal_is_retryable(noauth: SMTPServer) -> None:
    with SMTPBackend(smtp_config(noauth)) as backend:
        with pytest.raises(TemporaryFailure, match="tempfail@example.org \\(451") as caught:
            backend.send(
                build_message(), sender="a@example.org", recipients=["tempfail@example.org"]
            )
    assert caught.value.retryable is True


def test_connection_refused(smtp_closed_port: int) -> None:
    config = smtp_config_for("127.0.0.1", smtp_closed_port)
    with pytest.raises(ConnectionFailed, match="connection refused by 127.0.0.1") as caught:
        with SMTPBackend(config):
            pass
    assert caught.value.retryable is True


def test_silent_server_times_out(smtp_silent_listener: tuple[str, int]) -> None:
    host, port = smtp_silent_listener
    config = smtp_config_for(host, port, timeout=1)
    started = time.monotonic()
    with pytest.raises(ConnectionFailed, match="within 1 s \\(timeout\\)") as caught:
        with SMTPBackend(config):
            pass
    assert 0.9 < time.monotonic() - started < 4
    assert caught.value.retryable is True


def test_implicit_tls_against_a_silent_server_times_out_in_the_handshake(
    smtp_silent_listener: tuple[str, int],
) -> None:
    host, port = smtp_silent_listener
    config = ServerConfig(host=host, port=port, security=Security.SSL, timeout=1)
    with pytest.raises(ConnectionFailed, match="TLS handshake within 1 s \\(timeout\\)"):
        with SMTPBackend(config):
            pass


def test_server_drops_the_connection_mid_session(noauth: SMTPServer) -> None:
    with SMTPBackend(smtp_config(noauth)) as backend:
        backend.send(build_message(), sender="a@example.org", recipients=["bob@example.org"])
        assert noauth.drop_connections() == 1
        with pytest.raises(ConnectionFailed) as caught:
            backend.send(build_message(), sender="a@example.org", recipients=["bob@example.org"])
        assert caught.value.retryable is True
        assert "closed the connection" in str(caught.value) or "lost" in str(caught.value)
        # And it stays failed (no silent success on a dead socket).
        with pytest.raises(ConnectionFailed):
            backend.send(build_message(), sender="a@example.org", recipients=["bob@example.org"])
    assert len(noauth.messages) == 1


def test_close_never_raises_and_send_after_close_fails(noauth: SMTPServer) -> None:
    backend = SMTPBackend(smtp_config(noauth))
    backend.open()
    backend.close()
    backend.close()
    with pytest.raises(ConnectionFailed, match="not connected"):
        backend.send(build_message(), sender="a@example.org", recipients=["bob@example.org"])


def test_password_not_in_repr(starttls: SMTPServer) -> None:
    backend = SMTPBackend(smtp_config(starttls))
    assert USERS["alice"] not in repr(backend)
    assert USERS["alice"] not in repr(backend.config)


def test_non_ascii_password_uses_utf8_plain(starttls: SMTPServer) -> None:
    # smtplib alone would crash encoding this; the server must see a clean 535.
    config = smtp_config(starttls, password="pässwörd")
    with pytest.raises(AuthenticationFailed, match="user alice"):
        with SMTPBackend(config):
            pass


def test_errors_are_backend_errors_with_messages(smtp_closed_port: int) -> None:
    with pytest.raises(BackendError) as caught:
        with SMTPBackend(smtp_config_for("127.0.0.1", smtp_closed_port)):
            pass
    assert caught.value.message


def test_concurrent_backends_use_separate_connections(noauth: SMTPServer) -> None:
    def send_three() -> None:
        with SMTPBackend(smtp_config(noauth)) as backend:
            for _ in range(3):
                backend.send(build_message(), sender="a@example.org", recipients=["b@example.org"])

    threads = [threading.Thread(target=send_three) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    received = noauth.wait_for(9)
    assert noauth.connections == 3
    assert len({m.connection_id for m in received}) == 3
