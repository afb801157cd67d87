#!/usr/bin/python3
"""Managed by mailstack (lab only): the HTTPS JSON side of the SIEM this host plays. Each
POSTed record is written as one line to the log given as argument; the answer is 204, but
422 for a record whose Message-ID carries REFUSED (a SIEM's own content rule: the lab
tests make one refuse a record for good)."""

import http.server
import ssl
import sys

PORT, LOG, CERT, KEY = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
REFUSED = b"refused-by-the-siem"


class Receiver(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the sender uses it

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        if REFUSED in body:
            self.send_response(422)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        with open(LOG, "ab") as log:
            log.write(body.replace(b"\n", b" ") + b"\n")
        self.send_response(204)
        self.end_headers()


server = http.server.ThreadingHTTPServer(("", PORT), Receiver)
context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
context.load_cert_chain(CERT, KEY)
server.socket = context.wrap_socket(server.socket, server_side=True)
server.serve_forever()
