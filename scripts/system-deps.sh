#!/usr/bin/env bash
# Installs the Debian packages the tests and the demo need, when missing:
# Dovecot (IMAP/POP3 test and demo server), Chromium (browser tests),
# Redis and PostgreSQL (the broker and database the production shape uses).
set -euo pipefail

want=()
command -v dovecot >/dev/null 2>&1 || want+=(dovecot-imapd dovecot-pop3d)
command -v chromium >/dev/null 2>&1 || want+=(chromium)
command -v redis-server >/dev/null 2>&1 || want+=(redis-server)
command -v pg_ctlcluster >/dev/null 2>&1 || command -v initdb >/dev/null 2>&1 || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || want+=(postgresql)

if [ ${#want[@]} -gt 0 ]; then
    if [ "$(id -u)" != 0 ]; then SUDO=sudo; else SUDO=; fi
    echo "Installing Debian packages: ${want[*]}"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${want[@]}" >/dev/null
fi
