"""The staged connection test against real servers on loopback.

alice has a Dovecot mailbox and an SMTP login; each failure case checks the
stage that fails and the advice it gives.
"""

from __future__ import annotations

import socket
import threading

import pytest

from mailsessions.backends.base import Security
from mailsessions.diagnostics import diagnose_incoming, diagnose_outgoing
from mailsessions.policy import TargetPolicy
from tests.servers.dovecot import silent_listener
from tests.servers.smtp import smtp_config

OPEN = TargetPolicy()


def stages(diagnosis) -> dict[str, tuple[str, str]]:
    return {s.name: (s.outcome, s.message) for s in diagnosis.stages}


def failed(diagnosis):
    assert not diagnosis.passed
    stage = next(s for s in diagnosis.stages if s.outcome == "failed")
    # It stops at the first failure: nothing is recorded after it.
    assert diagnosis.stages[-1] is stage
    return stage


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize(
    ("protocol", "security"),
    [("imap", "ssl"), ("imap", "starttls"), ("pop3", "ssl"), ("pop3", "starttls")],
)
def test_every_stage_passes_against_dovecot(alice_mailbox, protocol, security):
    config = alice_mailbox.config_for("alice", protocol, security)
    diagnosis = diagnose_incoming(protocol, config, policy=OPEN)
    result = stages(diagnosis)
    assert diagnosis.passed, diagnosis.summary
    expected = [
        "dns",
        "policy",
        "tcp",
        "tls" if security == "ssl" else "starttls",
        "greeting",
        "auth",
        "mailbox",
    ]
    assert set(expected) <= set(result)
    assert "127.0.0.1 is an IP address" in result["dns"][1]
    assert result["auth"][1] == "logged in as alice"
    assert "INBOX holds 0 messages" in result["mailbox"][1]
    tls_stage = result["tls" if security == "ssl" else "starttls"]
    # Verification is off in this config: passed, but flagged on the stage and in the summary.
    assert tls_stage[0] == "warning" and "NOT verified" in tls_stage[1] and "TLSv1" in tls_stage[1]
    assert "NOT verified" in diagnosis.summary
    if protocol == "imap":
        assert "folders" in result and "INBOX" in result["folders"][1]


def test_wrong_password_fails_at_authentication_without_the_password(alice_mailbox):
    config = alice_mailbox.config_for("alice", "imap", "ssl", password="Wrong-Pass-123")
    stage = failed(diagnose_incoming("imap", config, policy=OPEN))
    assert stage.name == "auth"
    assert "authentication failed for user alice" in stage.message
    assert "Wrong-Pass-123" not in stage.message


def test_connection_refused_names_the_port(alice_mailbox):
    port = closed_port()
    config = alice_mailbox.config_for("alice", "imap", "ssl", port=port)
    stage = failed(diagnose_incoming("imap", config, policy=OPEN))
    assert stage.name == "tcp"
    assert f"connection refused by 127.0.0.1 port {port}" in stage.message
    assert "usually uses port 993" in stage.message


def test_a_listener_that_never_answers_times_out(alice_mailbox):
    with silent_listener() as port:
        config = alice_mailbox.config_for("alice", "imap", "starttls", port=port, timeout=1)
        stage = failed(diagnose_incoming("imap", config, policy=OPEN))
    assert stage.name == "greeting"
    assert "1 s" in stage.message or "1.0 s" in stage.message


def test_unresolvable_host(alice_mailbox):
    config = alice_mailbox.config_for("alice", "imap", "ssl", host="nonexistent.invalid")
    stage = failed(diagnose_incoming("imap", config, policy=OPEN))
    assert stage.name == "dns"
    assert "the name nonexistent.invalid does not resolve" in stage.message


def test_starttls_against_the_implicit_tls_port_says_choose_ssl(alice_mailbox):
    config = alice_mailbox.config_for(
        "alice", "imap", "starttls", port=alice_mailbox.imaps_port, timeout=1
    )
    stage = failed(diagnose_incoming("imap", config, policy=OPEN))
    assert stage.name == "greeting"
    assert "choose SSL/TLS" in stage.message


def test_ssl_against_the_plain_port_says_choose_starttls(alice_mailbox):
    config = alice_mailbox.config_for("alice", "pop3", "ssl", port=alice_mailbox.pop3_port)
    stage = failed(diagnose_incoming("pop3", config, policy=OPEN))
    assert stage.name == "tls"
    assert "choose STARTTLS" in stage.message


def test_self_signed_certificate_fails_when_verified(alice_mailbox):
    config = alice_mailbox.config_for("alice", "imap", "ssl", verify_certificate=True)
    stage = failed(diagnose_incoming("imap", config, policy=OPEN))
    assert stage.name == "tls"
    assert "self-signed" in stage.message


def test_server_closing_mid_session_fails_at_that_stage():
    """A server that greets, then hangs up on the first command."""
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def serve():
        for _ in range(3):
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            with conn:
                conn.sendall(b"* OK ready\r\n")
                conn.recv(1024)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    from mailsessions.backends.base import ServerConfig

    config = ServerConfig(
        host="127.0.0.1",
        port=port,
        security=Security.NONE,
        username="alice",
        password="x",
        timeout=2,
    )
    diagnosis = diagnose_incoming("imap", config, policy=OPEN)
    listener.close()
    stage = failed(diagnosis)
    assert stage.name in ("greeting", "auth")
    assert "closed the connection" in stage.message or "connection" in stage.message.lower()
    assert stages(diagnosis)["starttls"][0] == "warning"  # plain text is flagged


def test_policy_blocks_a_denied_target(alice_mailbox):
    config = alice_mailbox.config_for("alice", "imap", "ssl")
    policy = TargetPolicy(denied=("127.0.0.0/8",))
    stage = failed(diagnose_incoming("imap", config, policy=policy))
    assert stage.name == "policy"
    assert "deny list" in stage.message
    stage = failed(diagnose_incoming("imap", config, policy=TargetPolicy(allow_loopback=False)))
    assert "loopback" in stage.message
    stage = failed(diagnose_incoming("imap", config, policy=TargetPolicy(ports=(993,))))
    assert "port" in stage.message


def test_smtp_stages_and_test_mail(smtp_auth_starttls):
    server = smtp_auth_starttls
    server.clear()
    config = smtp_config(server)
    diagnosis = diagnose_outgoing(
        config,
        send_to="bob@example.test",
        sender="alice@example.test",
        message=b"Subject: t\r\n\r\nhi\r\n",
        policy=OPEN,
    )
    result = stages(diagnosis)
    assert diagnosis.passed, diagnosis.summary
    assert "PLAIN" in result["capabilities"][1]
    assert result["auth"][1] == "logged in as alice"
    assert "sent to bob@example.test" in result["send"][1] and "250" in result["send"][1]
    assert server.wait_for(1)[0].rcpt_tos == ("bob@example.test",)


def test_smtp_requiring_auth_with_none_given_fails_clearly(smtp_auth_plain):
    config = smtp_config(smtp_auth_plain, username="", password="")
    stage = failed(diagnose_outgoing(config, sender="alice@example.test", policy=OPEN))
    assert stage.name == "auth"
    assert "requires authentication" in stage.message


def test_smtp_without_auth_relay_passes(smtp_noauth):
    config = smtp_config(smtp_noauth)
    diagnosis = diagnose_outgoing(config, sender="relay@example.test", policy=OPEN)
    assert diagnosis.passed, diagnosis.summary
    assert "no authentication" in stages(diagnosis)["auth"][1]
