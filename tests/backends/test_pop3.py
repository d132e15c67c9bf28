"""POP3Backend against a real Dovecot on loopback.

alice's mailbox is arranged over IMAP by the fixture (``alice_mailbox``
empties it first) and read back the same way; bob exists only to prove a
wrong password is refused for a real user.
"""

from __future__ import annotations

import time

import pytest

from mailsessions.backends.base import (
    AuthenticationFailed,
    ConnectionFailed,
    Flag,
    FolderNotFound,
    NotSupported,
    SearchCriteria,
    Security,
    TLSFailed,
)
from mailsessions.backends.pop3 import POP3Backend
from tests.servers.dovecot import free_port, make_message, silent_listener

pytestmark = pytest.mark.timeout(60)


def backend(server, security=Security.SSL, **kw) -> POP3Backend:
    return POP3Backend(server.config_for("alice", "pop3", security, **kw))


def uidls(server) -> list[str]:
    """The UIDLs Dovecot gives alice's INBOX messages, read with a fresh session."""
    with backend(server) as pop:
        return pop.search("INBOX", SearchCriteria())


# --- connecting -------------------------------------------------------------


@pytest.mark.parametrize("security", list(Security))
def test_connects_and_logs_in_with_each_security(dovecot, security):
    with backend(dovecot, security) as pop:
        assert pop.greeting.startswith("+OK")
        assert "UIDL" in pop.capabilities
        assert pop.list_folders() == ["INBOX"]
        if security == Security.NONE:
            assert pop.tls is None
        else:
            assert pop.tls.version.startswith("TLS")
            assert pop.tls.verified is False


def test_wrong_password_names_the_user_and_hides_the_password(dovecot):
    config = dovecot.config_for("bob", "pop3", Security.SSL, password="not-bobs-password")
    with pytest.raises(AuthenticationFailed) as caught:
        with POP3Backend(config):
            pass
    assert str(caught.value) == "authentication failed for user bob"
    assert "not-bobs-password" not in str(caught.value)
    assert caught.value.retryable is False


def test_connection_refused(dovecot):
    config = dovecot.config_for("alice", "pop3", Security.SSL, port=free_port())
    with pytest.raises(ConnectionFailed, match="connection refused by 127.0.0.1:") as caught:
        POP3Backend(config).open()
    assert caught.value.retryable is True


@pytest.mark.parametrize("security", [Security.SSL, Security.STARTTLS])
def test_a_listener_that_never_answers_times_out(dovecot, security):
    with silent_listener() as port:
        config = dovecot.config_for("alice", "pop3", security, port=port, timeout=1)
        started = time.monotonic()
        with pytest.raises(ConnectionFailed, match=f"nothing answers on port {port} .* within 1 s"):
            with POP3Backend(config):
                pass
    assert time.monotonic() - started < 5


def test_unresolvable_host(dovecot):
    config = dovecot.config_for("alice", "pop3", Security.SSL, host="nonexistent.invalid")
    with pytest.raises(ConnectionFailed, match="the name nonexistent.invalid does not resolve"):
        POP3Backend(config).open()


def test_starttls_against_the_implicit_tls_port_suggests_ssl(dovecot):
    config = dovecot.config_for(
        "alice", "pop3", Security.STARTTLS, port=dovecot.pop3s_port, timeout=1
    )
    with pytest.raises(ConnectionFailed, match="choose SSL"):
        with POP3Backend(config):
            pass


def test_ssl_against_the_plain_port_suggests_starttls(dovecot):
    config = dovecot.config_for("alice", "pop3", Security.SSL, port=dovecot.pop3_port)
    with pytest.raises(TLSFailed, match="choose STARTTLS"):
        with POP3Backend(config):
            pass


@pytest.mark.parametrize("security", [Security.SSL, Security.STARTTLS])
def test_verification_refuses_the_self_signed_certificate(dovecot, security):
    with pytest.raises(TLSFailed, match="self-signed") as caught:
        with backend(dovecot, security, verify_certificate=True):
            pass
    assert caught.value.retryable is False


def test_server_dropping_the_connection_mid_session(alice_mailbox):
    alice_mailbox.append("alice", "INBOX", make_message())
    with backend(alice_mailbox) as pop:
        pop.folder_info("INBOX")
        alice_mailbox.kick("alice")
        with pytest.raises(ConnectionFailed, match="closed the connection") as caught:
            pop.search("INBOX", SearchCriteria())
    assert caught.value.retryable is True


# --- reading ------------------------------------------------------------------


@pytest.fixture
def five(alice_mailbox):
    """Five messages in alice's INBOX (the third one 20 kB); returns their raw bytes."""
    raws = [
        make_message(f"Message {i}", body=("x" * 20_000 if i == 2 else f"Body {i}") + "\n..\n")
        for i in range(5)
    ]
    alice_mailbox.append_many("alice", "INBOX", raws)
    return raws


def test_only_the_inbox_exists(alice_mailbox, five):
    with backend(alice_mailbox) as pop:
        assert pop.folder_info("INBOX").message_count == 5
        assert pop.folder_info("inbox").message_count == 5
        with pytest.raises(FolderNotFound, match="only the INBOX"):
            pop.folder_info("Archive")
        with pytest.raises(FolderNotFound):
            pop.search("Archive", SearchCriteria())


def test_search_gives_uidls_with_order_limit_exclusions_and_size(alice_mailbox, five):
    with backend(alice_mailbox) as pop:
        ids = pop.search("INBOX", SearchCriteria())
        assert len(ids) == 5 and len(set(ids)) == 5
        assert pop.search("INBOX", SearchCriteria(), newest_first=True) == ids[::-1]
        assert pop.search("INBOX", SearchCriteria(), newest_first=True, limit=2) == ids[:-3:-1]
        assert pop.search("INBOX", SearchCriteria(exclude_ids=frozenset(ids[:4]))) == ids[4:]
        assert pop.search("INBOX", SearchCriteria(larger_than=10_000)) == [ids[2]]
    # UIDLs are stable across sessions: that is what incremental reads rely on.
    assert uidls(alice_mailbox) == ids


@pytest.mark.parametrize("pipelining", [None, False], ids=["pipelined", "one-by-one"])
def test_fetch_in_batches_returns_the_exact_bytes(alice_mailbox, five, pipelining):
    with backend(alice_mailbox) as pop:
        assert "PIPELINING" in pop.capabilities
        pop.batch_size = 2
        pop.pipelining = pipelining
        ids = pop.search("INBOX", SearchCriteria())
        fetched = list(pop.fetch("INBOX", [*ids[::-1], "no-such-uidl"]))
    assert [m.server_id for m in fetched] == ids[::-1]
    assert [m.raw for m in fetched] == five[::-1]
    assert all(m.folder == "INBOX" and m.size == len(m.raw) for m in fetched)


def test_delete_commits_when_the_session_closes(alice_mailbox, five):
    pop = backend(alice_mailbox)
    with pop:
        ids = pop.search("INBOX", SearchCriteria())
        assert pop.delete("INBOX", [ids[0], ids[3], "no-such-uidl"]) == 2
        assert pop.search("INBOX", SearchCriteria()) == [ids[1], ids[2], ids[4]]
        assert list(pop.fetch("INBOX", [ids[0]])) == []
        # Not applied yet: POP3 deletes at QUIT.
        assert len(alice_mailbox.folder_messages("alice", "INBOX")) == 5
    remaining = alice_mailbox.folder_messages("alice", "INBOX")
    assert [m.raw for m in remaining] == [five[1], five[2], five[4]]


def test_delete_is_lost_when_the_connection_drops_before_quit(alice_mailbox, five):
    with backend(alice_mailbox) as pop:
        ids = pop.search("INBOX", SearchCriteria())
        pop.delete("INBOX", ids[:2])
        alice_mailbox.kick("alice")
    assert len(alice_mailbox.folder_messages("alice", "INBOX")) == 5


def test_commit_raises_when_the_server_is_gone(alice_mailbox, five):
    pop = backend(alice_mailbox)
    pop.open()
    pop.delete("INBOX", pop.search("INBOX", SearchCriteria())[:1])
    alice_mailbox.kick("alice")
    with pytest.raises(ConnectionFailed):
        pop.commit()
    pop.close()  # still safe afterwards


def test_flags_move_and_copy_are_not_supported(alice_mailbox, five):
    with backend(alice_mailbox) as pop:
        ids = pop.search("INBOX", SearchCriteria())
        for call in (
            lambda: pop.move("INBOX", ids[:1], "Archive", create=True),
            lambda: pop.copy("INBOX", ids[:1], "Archive", create=True),
            lambda: pop.set_flags("INBOX", ids[:1], add=[Flag.SEEN]),
        ):
            with pytest.raises(NotSupported, match="POP3 can only read and delete messages"):
                call()
    assert POP3Backend.features == {"delete"}
    assert len(alice_mailbox.folder_messages("alice", "INBOX")) == 5
