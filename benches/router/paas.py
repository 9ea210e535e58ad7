#!/usr/bin/env python3
"""A stand-in PaaS for the router benchmark: serves one app on the route stream
(GET /v1/routes/stream, NDJSON) and accepts wake/stats POSTs.

usage: paas.py PORT APP BACKEND_ADDR [BACKEND_ADDR...]

With HOSTNAMES=a,b the app is also served at those names, and with CERT=chain.pem KEY=key.pem
that certificate is sent for them (the router's HTTPS listener serves it by SNI).
"""
import json
import os
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

PORT = int(sys.argv[1])
APP = {
    "name": sys.argv[2],
    "state": "running",
    "backends": [{"addr": a, "healthy": True, "backup": False} for a in sys.argv[3:]],
    "hostnames": [h for h in os.environ.get("HOSTNAMES", "").split(",") if h],
}
CERTS = []
if os.environ.get("CERT"):
    with open(os.environ["CERT"]) as c, open(os.environ["KEY"]) as k:
        CERTS = [{"hostnames": APP["hostnames"], "chain_pem": c.read(), "key_pem": k.read()}]


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def chunk(self, line):
        data = (line + "\n").encode()
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.wfile.flush()

    def do_GET(self):
        if self.path != "/v1/routes/stream":
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("content-type", "application/x-ndjson")
        self.send_header("transfer-encoding", "chunked")
        self.end_headers()
        try:
            self.chunk(json.dumps({"type": "snapshot", "apps": [APP]}))
            if CERTS:
                self.chunk(json.dumps({"type": "certificates", "certs": CERTS}))
            while True:
                time.sleep(10)
                self.chunk('{"type":"heartbeat"}')
        except (BrokenPipeError, ConnectionResetError):
            return

    def do_POST(self):
        length = int(self.headers.get("content-length", "0"))
        self.rfile.read(length)
        self.send_response(204)
        self.send_header("content-length", "0")
        self.end_headers()


ThreadingHTTPServer.daemon_threads = True
ThreadingHTTPServer(("127.0.0.1", PORT), Handler).serve_forever()
