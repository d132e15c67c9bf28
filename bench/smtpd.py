"""The test suite's aiosmtpd server (implicit TLS, AUTH) in a process of its own.

In its own process so that the server's event loop does not share the GIL
with the client being measured. Prints the port on stdout once ready, then
serves until stdin closes; ``argv[1]`` is a directory for the certificate.
"""

from __future__ import annotations

import sys
from pathlib import Path

from mailsessions.backends.base import Security
from tests.servers.certs import make_self_signed
from tests.servers.smtp import SMTPServer


class _Forgetful(SMTPServer):
    """Counts messages but does not keep them (1,000s of sends per run)."""

    def _record(self, message) -> int:
        with self._arrived:
            self.count = getattr(self, "count", 0) + 1
            return self.count


def main() -> None:
    cert = make_self_signed(Path(sys.argv[1]))
    server = _Forgetful("bench", security=Security.SSL, auth_required=True, cert=cert)
    server.start()
    print(server.port, flush=True)
    try:
        sys.stdin.read()
    finally:
        server.stop()


if __name__ == "__main__":
    main()
