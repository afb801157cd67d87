#!/usr/bin/python3
"""Managed by mailstack: rsyslog (omprog) hands this program the SIEM records, one JSON
line each, and it POSTs each to the URL given as its argument over HTTPS (certificate checked
against the system CA store, which holds the platform CA too). It confirms a record with
"OK" only after a 2xx answer; anything else keeps the record in rsyslog's disk queue, and
rsyslog tries again later. The connection is kept open between records."""

import http.client
import ssl
import sys
import urllib.parse


def main(url: str) -> None:
    target = urllib.parse.urlsplit(url)
    context = ssl.create_default_context()
    connection = None
    print("OK", flush=True)  # ready
    for line in sys.stdin:
        try:
            if connection is None:
                connection = http.client.HTTPSConnection(target.hostname, target.port or 443, timeout=10,
                                                         context=context)
            connection.request("POST", target.path or "/", body=line.strip().encode(),
                               headers={"Content-Type": "application/json"})
            answer = connection.getresponse()
            answer.read()
            reply = "OK" if 200 <= answer.status < 300 else f"HTTP {answer.status} {answer.reason}"
        except (OSError, http.client.HTTPException) as err:
            connection, reply = None, f"{type(err).__name__}: {err}"
        print(reply.replace("\n", " "), flush=True)


if __name__ == "__main__":
    main(sys.argv[1])
