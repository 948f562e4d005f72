"""A real SMTP server for the report e-mail test: Debian's aiosmtpd (python3-aiosmtpd, run by the system python3),
STARTTLS on a plain port or implicit TLS, AUTH required (only over TLS), or no TLS at all (`plain`, to show a
client refuses it), every message saved to a folder.

    /usr/bin/python3 tests/smtp_server.py --port 2525 --mode starttls --cert c.pem --key k.pem \
        --user office --password-file pw --out mails/

Each message is saved as <n>.eml with <n>.json beside it (envelope sender and recipients, whether the session was
under TLS, the login used). Prints "ready" once listening; stops on SIGTERM.
"""

from __future__ import annotations

import argparse
import json
import signal
import ssl
import sys
import threading
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword


class Saver:
    def __init__(self, out: Path) -> None:
        self.out, self.count = out, 0
        out.mkdir(parents=True, exist_ok=True)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.count += 1
        base = self.out / f"{self.count:03d}"
        base.with_suffix(".eml").write_bytes(envelope.original_content or envelope.content)
        facts = {
            "mail_from": envelope.mail_from,
            "rcpt_tos": list(envelope.rcpt_tos),
            "tls": session.ssl is not None or server.transport.get_extra_info("ssl_object") is not None,
            "login": getattr(session, "edge_login", None),
        }
        base.with_suffix(".json").write_text(json.dumps(facts))
        return "250 Message accepted for delivery"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--mode", choices=("starttls", "tls", "plain"), required=True)
    parser.add_argument("--cert", required=True)
    parser.add_argument("--key", required=True)
    parser.add_argument("--user", required=True)
    parser.add_argument("--password-file", required=True)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    password = Path(args.password_file).read_text().strip()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(args.cert, args.key)

    def authenticate(server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any) -> AuthResult:
        ok = (
            isinstance(auth_data, LoginPassword)
            and auth_data.login.decode() == args.user
            and auth_data.password.decode() == password
        )
        if ok:
            session.edge_login = args.user  # what the test checks: the login the message came under
        return AuthResult(success=ok, handled=False)

    smtp_options: dict = {"authenticator": authenticate, "auth_required": True, "auth_require_tls": True}
    if args.mode == "plain":  # no TLS at all: a client must refuse to send the report here
        smtp_options = {"authenticator": authenticate, "auth_require_tls": False}
        controller = Controller(Saver(Path(args.out)), hostname="127.0.0.1", port=args.port, **smtp_options)
    elif args.mode == "starttls":
        smtp_options.update(tls_context=context, require_starttls=True)
        controller = Controller(Saver(Path(args.out)), hostname="127.0.0.1", port=args.port, **smtp_options)
    else:  # implicit TLS: the whole session is under TLS (aiosmtpd 1.4 would not offer AUTH with auth_require_tls)
        smtp_options["auth_require_tls"] = False
        controller = Controller(
            Saver(Path(args.out)), hostname="127.0.0.1", port=args.port, ssl_context=context, **smtp_options
        )
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    controller.start()
    print("ready", flush=True)
    stop.wait()
    controller.stop()
    sys.exit(0)


if __name__ == "__main__":
    main()
