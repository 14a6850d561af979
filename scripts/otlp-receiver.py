#!/usr/bin/env python3
"""An OTLP trace receiver for the tests: OpenTelemetry's own protobuf definitions
(opentelemetry-proto), served over gRPC (grpcio) and over HTTP (POST /v1/traces, protobuf).

Every span received is written as one JSON line to OUT: its ids, parent, name, kind,
attributes, links, its resource's attributes and the transport it came by. Once both servers
listen, the gRPC port is printed alone on the first line and the HTTP port written to
`http.port`; the receiver exits when its standard input closes, and with status 3 when a package
it needs is missing.

Usage: otlp-receiver.py OUT
"""

import json
import os
import sys
import threading
from concurrent import futures
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

try:
    import grpc
    from opentelemetry.proto.collector.trace.v1 import (
        trace_service_pb2,
        trace_service_pb2_grpc,
    )
except ImportError as error:
    print(f"missing: {error} (pip install opentelemetry-proto grpcio)", file=sys.stderr)
    sys.exit(3)

OUT = sys.argv[1]
LOCK = threading.Lock()


def value_of(any_value):
    kind = any_value.WhichOneof("value")
    if kind is None:
        return None
    value = getattr(any_value, kind)
    if kind == "array_value":
        return [value_of(item) for item in value.values]
    if kind == "kvlist_value":
        return {item.key: value_of(item.value) for item in value.values}
    if kind == "bytes_value":
        return value.hex()
    return value


def attributes(pairs):
    return {pair.key: value_of(pair.value) for pair in pairs}


def record(request, transport):
    lines = []
    for resource_spans in request.resource_spans:
        resource = attributes(resource_spans.resource.attributes)
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                lines.append(json.dumps({
                    "trace_id": span.trace_id.hex(),
                    "span_id": span.span_id.hex(),
                    "parent_span_id": span.parent_span_id.hex(),
                    "name": span.name,
                    "kind": span.kind,
                    "attributes": attributes(span.attributes),
                    "links": [
                        {"trace_id": link.trace_id.hex(), "span_id": link.span_id.hex()}
                        for link in span.links
                    ],
                    "resource": resource,
                    "transport": transport,
                }))
    with LOCK, open(OUT, "a", encoding="utf-8") as out:
        for line in lines:
            out.write(line + "\n")


class TraceService(trace_service_pb2_grpc.TraceServiceServicer):  # noqa: D101
    def Export(self, request, context):
        record(request, "grpc")
        return trace_service_pb2.ExportTraceServiceResponse()


class HttpReceiver(BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        if self.path != "/v1/traces":
            self.send_response(404)
            self.end_headers()
            return
        request = trace_service_pb2.ExportTraceServiceRequest.FromString(body)
        record(request, "http")
        answer = trace_service_pb2.ExportTraceServiceResponse().SerializeToString()
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, *args):
        pass


def main():
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(TraceService(), server)
    grpc_port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    http = ThreadingHTTPServer(("127.0.0.1", 0), HttpReceiver)
    threading.Thread(target=http.serve_forever, daemon=True).start()
    with open("http.port.tmp", "w", encoding="utf-8") as port:
        port.write(str(http.server_address[1]))
    os.replace("http.port.tmp", "http.port")
    print(grpc_port, flush=True)
    sys.stdin.read()
    os._exit(0)


if __name__ == "__main__":
    main()
