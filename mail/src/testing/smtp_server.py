"""The SMTP server of mercato's mail tests: aiosmtpd, storing every message it accepts.

Usage: python3 smtp_server.py DIRECTORY

Listens on a free port of 127.0.0.1 and prints that port, alone on the first line of its
output, once the socket is listening. Each accepted message is stored as DIRECTORY/NNNNNN.eml
(the bytes as received, dot-stuffing undone) after DIRECTORY/NNNNNN.envelope (MAIL FROM, then
each RCPT TO, one a line), each written under a temporary name and renamed. A recipient at
refused.example is answered 550 and one at deferred.example 451, so that tests see permanent
and transient refusals. A recipient at once-deferred.example is answered 451 the first time
its address is given and accepted after, and a message to one at drop.example has its
connection dropped in the middle of its first DATA (no reply) and is accepted when sent again
(each message known by its Message-ID), so that tests see a retry end in one message. Exits when its standard input closes (the test process is gone).
Exits with status 3 when aiosmtpd is not installed.
"""

import asyncio
import itertools
import os
import sys
import threading

try:
    from aiosmtpd.smtp import SMTP
except ImportError as error:
    print(f"aiosmtpd is not installed: {error}", file=sys.stderr, flush=True)
    sys.exit(3)

REFUSED_DOMAIN = "refused.example"
DEFERRED_DOMAIN = "deferred.example"
ONCE_DEFERRED_DOMAIN = "once-deferred.example"
DROP_DOMAIN = "drop.example"


class Store:
    """Keeps every accepted message in a directory; refuses the test domains' recipients."""

    def __init__(self, directory):
        self.directory = directory
        self.numbers = itertools.count(1)
        self.deferred_once = set()
        self.dropped = set()

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        domain = address.rpartition("@")[2].lower()
        if domain == REFUSED_DOMAIN:
            return "550 5.1.1 <%s>: recipient refused" % address
        if domain == DEFERRED_DOMAIN:
            return "451 4.3.0 <%s>: try again later" % address
        if domain == ONCE_DEFERRED_DOMAIN and address.lower() not in self.deferred_once:
            self.deferred_once.add(address.lower())
            return "451 4.3.0 <%s>: try again later" % address
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        if any(rcpt.rpartition("@")[2].lower() == DROP_DOMAIN for rcpt in envelope.rcpt_tos):
            message_id = message_id_of(envelope.original_content)
            if message_id not in self.dropped:
                self.dropped.add(message_id)
                # Cut off in the middle of the message: no reply, the connection closed.
                server.transport.close()
                return "421 4.3.0 connection dropped"
        name = "%06d" % next(self.numbers)
        lines = [envelope.mail_from, *envelope.rcpt_tos]
        self.write(name + ".envelope", ("\n".join(lines) + "\n").encode("utf-8"))
        self.write(name + ".eml", envelope.original_content)
        return "250 OK stored as " + name

    def write(self, name, data):
        temporary = os.path.join(self.directory, "." + name + ".tmp")
        with open(temporary, "wb") as file:
            file.write(data)
        os.replace(temporary, os.path.join(self.directory, name))


def message_id_of(content):
    for line in content.split(b"\r\n"):
        if not line:
            break
        if line.lower().startswith(b"message-id:"):
            return line.split(b":", 1)[1].strip()
    return content


def exit_when_stdin_closes():
    sys.stdin.buffer.read()
    os._exit(0)


async def serve(directory):
    store = Store(directory)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: SMTP(store, enable_SMTPUTF8=True, hostname="mercato-test-smtp"),
        host="127.0.0.1",
        port=0,
    )
    print(server.sockets[0].getsockname()[1], flush=True)
    threading.Thread(target=exit_when_stdin_closes, daemon=True).start()
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(serve(sys.argv[1]))
