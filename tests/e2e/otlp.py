"""A small OTLP/HTTP receiver for the tests: it takes what OpenTelemetry's exporter POSTs to
/v1/traces (ExportTraceServiceRequest, protobuf) and keeps every span, decoded by the protocol's
own messages (opentelemetry-proto, which the exporter brings)."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)


def _value(any_value: Any) -> Any:
    kind = any_value.WhichOneof("value")
    return getattr(any_value, kind) if kind else None


class Receiver:
    """Spans received, each a dict: name, trace and span ids (hex), parent, times, attributes,
    its resource's attributes, links, status code."""

    def __init__(self) -> None:
        self.spans: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                receiver._take(ExportTraceServiceRequest.FromString(body))
                answer = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("content-type", "application/x-protobuf")
                self.send_header("content-length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def _take(self, request: Any) -> None:
        spans = []
        for resource_spans in request.resource_spans:
            resource = {kv.key: _value(kv.value) for kv in resource_spans.resource.attributes}
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    spans.append(
                        {
                            "name": span.name,
                            "trace_id": span.trace_id.hex(),
                            "span_id": span.span_id.hex(),
                            "parent": span.parent_span_id.hex(),
                            "start": span.start_time_unix_nano,
                            "end": span.end_time_unix_nano,
                            "attributes": {kv.key: _value(kv.value) for kv in span.attributes},
                            "resource": resource,
                            "links": [link.span_id.hex() for link in span.links],
                            "status": span.status.code,  # 0 unset, 1 ok, 2 error
                        }
                    )
        with self._lock:
            self.spans += spans

    def named(self, name: str) -> list[dict[str, Any]]:
        with self._lock:
            return [span for span in self.spans if span["name"] == name]

    def children(self, parent: dict[str, Any]) -> dict[str, dict[str, Any]]:
        with self._lock:
            return {span["name"]: span for span in self.spans if span["parent"] == parent["span_id"]}

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
