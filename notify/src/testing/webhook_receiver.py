"""The webhook receiver of mercato's notify tests: verifies and records every delivery.

Usage: python3 webhook_receiver.py

Listens on a free port of 127.0.0.1 and prints that port, alone on the first line of its
output, once the socket is listening. Exits when its standard input closes (the test process is
gone). Exits with status 3 when the standardwebhooks or cloudevents package is missing.

Every request to a path other than the control paths below is a delivery. Its signature is
verified with the standardwebhooks package (webhook-id, webhook-timestamp, webhook-signature)
against the secret set through /_control, and its body parsed as a CloudEvent with the
cloudevents package (version 2; structured mode, application/cloudevents+json, or binary mode).
The answer: the fail status while `fail_next` > 0 (counting down), else 302 to `redirect_to`
while `redirect_next` > 0 (counting down), else 400 when verification or parsing failed, else
204. Each delivery is recorded as

    {path, method, webhook_id, verified, error, type, id, subject, position, data, status,
     headers}

(`position` is the CloudEvent extension attribute, as a string; `error` says why it was refused,
or null). Control, on the same server:

    POST /_control   JSON {"secret": "whsec_...", "fail_next": N, "fail_status": 500,
                     "redirect_next": N, "redirect_to": "http://..."}, each optional;
                     answers the resulting settings
    GET  /_received  the records of the deliveries answered 2xx, in arrival order
    GET  /_attempts  the records of every delivery, with the status answered
"""

import base64
import inspect
import json
import os
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

try:
    from cloudevents.core.bindings.http import HTTPMessage, from_http
    from cloudevents.core.formats.json import JSONFormat
    from standardwebhooks.webhooks import Webhook
except ImportError as error:
    print(
        f"a package of the webhook receiver is not installed: {error}",
        file=sys.stderr,
        flush=True,
    )
    sys.exit(3)

# Older releases of standardwebhooks always parse the body as JSON after verifying it.
VERIFY_TAKES_JSON_PARSE = "json_parse" in inspect.signature(Webhook.verify).parameters

CONTROL_PATH = "/_control"
RECEIVED_PATH = "/_received"
ATTEMPTS_PATH = "/_attempts"
# The standard attributes of a CloudEvent: the rest are extensions.
STANDARD_ATTRIBUTES = {
    "id",
    "source",
    "specversion",
    "type",
    "datacontenttype",
    "dataschema",
    "subject",
    "time",
}


class State:
    """The settings of /_control and the records, shared by the request threads."""

    def __init__(self):
        self.lock = threading.Lock()
        self.secret = None
        self.fail_next = 0
        self.fail_status = 500
        self.redirect_next = 0
        self.redirect_to = None
        self.received = []
        self.attempts = []

    def settings(self):
        return {
            "secret": self.secret,
            "fail_next": self.fail_next,
            "fail_status": self.fail_status,
            "redirect_next": self.redirect_next,
            "redirect_to": self.redirect_to,
        }

    def configure(self, changes):
        """Applies a /_control request; returns an error text or None."""
        if not isinstance(changes, dict):
            return "the control request must be a JSON object"
        unknown = set(changes) - {
            "secret",
            "fail_next",
            "fail_status",
            "redirect_next",
            "redirect_to",
        }
        if unknown:
            return f"unknown control fields: {sorted(unknown)}"
        for field in ("fail_next", "redirect_next"):
            value = changes.get(field)
            if value is not None and (not isinstance(value, int) or value < 0):
                return f"{field} must be a count (0 or more)"
        status = changes.get("fail_status")
        if status is not None and (not isinstance(status, int) or not 100 <= status <= 599):
            return "fail_status must be an HTTP status (100 to 599)"
        secret = changes.get("secret")
        if secret is not None:
            try:
                Webhook(secret)
            except Exception as error:  # noqa: BLE001 - any failure means a bad secret
                return f"the secret is not a standard webhooks secret (whsec_ + base64): {error}"
        with self.lock:
            for field, value in changes.items():
                if value is not None or field in ("secret", "redirect_to"):
                    setattr(self, field, value)
            return None

    def next_answer(self):
        """The status (and Location) forced on the next delivery, counting down; or None."""
        with self.lock:
            if self.fail_next > 0:
                self.fail_next -= 1
                return self.fail_status, None
            if self.redirect_next > 0:
                self.redirect_next -= 1
                return 302, self.redirect_to or "/"
            return None


STATE = State()


def json_safe(value):
    """The event data as JSON can carry it (bytes as base64)."""
    if isinstance(value, (bytes, bytearray)):
        return {"base64": base64.b64encode(bytes(value)).decode("ascii")}
    return value


def examine(path, method, headers, body):
    """The record of a delivery: verification and parsing, not yet its status."""
    record = {
        "path": path,
        "method": method,
        "webhook_id": headers.get("webhook-id"),
        "verified": False,
        "error": None,
        "type": None,
        "id": None,
        "subject": None,
        "position": None,
        "data": None,
        "headers": headers,
    }
    secret = STATE.secret
    if secret is None:
        record["error"] = 'no secret set: POST /_control {"secret": "whsec_..."} first'
    else:
        try:
            if VERIFY_TAKES_JSON_PARSE:
                Webhook(secret).verify(body, headers, json_parse=False)
            else:
                Webhook(secret).verify(body, headers)
            record["verified"] = True
        except Exception as error:  # noqa: BLE001 - every failure is reported
            record["error"] = f"verification failed: {type(error).__name__}: {error}"
    try:
        event = from_http(HTTPMessage(headers=headers, body=body), JSONFormat())
        record["type"] = event.get_type()
        record["id"] = event.get_id()
        record["subject"] = event.get_subject()
        position = event.get_extension("position")
        record["position"] = None if position is None else str(position)
        record["data"] = json_safe(event.get_data())
        record["extensions"] = {
            name: str(value)
            for name, value in event.get_attributes().items()
            if name not in STANDARD_ATTRIBUTES
        }
    except Exception as error:  # noqa: BLE001 - every failure is reported
        if record["error"] is None:
            record["error"] = f"not a CloudEvent: {type(error).__name__}: {error}"
    return record


class Handler(BaseHTTPRequestHandler):
    # Keep-alive, as webhook senders pool their connections.
    protocol_version = "HTTP/1.1"
    server_version = "mercato-test-webhook-receiver"

    def do_GET(self):
        if self.path == RECEIVED_PATH:
            with STATE.lock:
                records = list(STATE.received)
            self.answer(200, records)
        elif self.path == ATTEMPTS_PATH:
            with STATE.lock:
                records = list(STATE.attempts)
            self.answer(200, records)
        else:
            self.deliver()

    def do_POST(self):
        if self.path == CONTROL_PATH:
            body = self.read_body()
            try:
                changes = json.loads(body or b"{}")
            except ValueError as error:
                self.answer(400, {"error": f"the control request is not JSON: {error}"})
                return
            error = STATE.configure(changes)
            if error is not None:
                self.answer(400, {"error": error})
                return
            with STATE.lock:
                settings = STATE.settings()
            self.answer(200, settings)
        else:
            self.deliver()

    def do_PUT(self):
        self.deliver()

    def do_PATCH(self):
        self.deliver()

    def do_DELETE(self):
        self.deliver()

    def deliver(self):
        body = self.read_body()
        headers = {name.lower(): value for name, value in self.headers.items()}
        record = examine(self.path, self.command, headers, body)
        forced = STATE.next_answer()
        location = None
        if forced is not None:
            status, location = forced
            if location is None:
                record["error"] = record["error"] or "failing as told by /_control (fail_next)"
        elif self.command != "POST":
            status = 405
            record["error"] = record["error"] or "deliveries are POSTed"
        elif record["error"] is not None:
            status = 400
        else:
            status = 204
        record["status"] = status
        with STATE.lock:
            STATE.attempts.append(record)
            if 200 <= status < 300:
                STATE.received.append(record)
        if status == 204:
            self.send_response(204)
            self.send_header("Content-Length", "0")
            self.end_headers()
        elif location is not None:
            self.send_response(status)
            self.send_header("Location", location)
            self.send_header("Content-Length", "0")
            self.end_headers()
        else:
            self.answer(status, {"error": record["error"]})

    def read_body(self):
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    # The trailer, up to the empty line.
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def answer(self, status, value):
        body = json.dumps(value).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def exit_when_stdin_closes():
    sys.stdin.buffer.read()
    os._exit(0)


def main():
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    print(server.server_address[1], flush=True)
    threading.Thread(target=exit_when_stdin_closes, daemon=True).start()
    server.serve_forever()


if __name__ == "__main__":
    main()
