#!/usr/bin/python3
"""Postfix socketmap, first in smtp_tls_policy_maps: answers `dane` for a receiving domain
whose MX (or the domain itself, when it has none) publishes DNSSEC-validated TLSA records
for port 25, so that the MTA-STS map after it never replaces DANE (RFC 8461, section 2);
NOTFOUND for every other domain, and TEMP when DNS fails: Postfix then defers the mail
rather than sending it under a weaker policy. The local resolver validates; its AD bit
says whether an answer is secure.

    mailstack-dane-first ADDRESS PORT
"""

import asyncio
import sys

import dns.asyncresolver
import dns.exception
import dns.flags
import dns.rdatatype
import dns.resolver

RESOLVER = dns.asyncresolver.Resolver(configure=False)
RESOLVER.nameservers = ["127.0.0.1"]
RESOLVER.use_edns(0, dns.flags.DO, 1232)
RESOLVER.lifetime = 10


class Temporary(Exception):
    """DNS did not answer: the policy is unknown for now."""


async def secure(name: str, rdtype: str) -> tuple[bool, list]:
    """(validated, records) of an answer; NXDOMAIN and no data count as no records."""
    try:
        answer = await RESOLVER.resolve(name, rdtype, raise_on_no_answer=False)
    except dns.resolver.NXDOMAIN as gone:
        return bool(gone.response(gone.qnames()[0]).flags & dns.flags.AD), []
    except (dns.resolver.NoNameservers, dns.exception.Timeout, dns.resolver.NoAnswer) as failed:
        raise Temporary(f"{rdtype} lookup of {name} failed") from failed
    return bool(answer.response.flags & dns.flags.AD), list(answer.rrset or ())


async def policy(domain: str) -> str:
    if not domain or domain.startswith("[") or ":" in domain:
        return "NOTFOUND "  # a host the transport names: its own settings decide
    try:
        validated, exchangers = await secure(domain, "MX")
        if not validated:
            return "NOTFOUND "  # an insecure MX set: DANE does not apply
        hosts = [str(mx.exchange).rstrip(".") for mx in sorted(exchangers, key=lambda mx: mx.preference)] or [domain]
        for host in hosts:
            validated, tlsa = await secure(f"_25._tcp.{host}", "TLSA")
            if validated and tlsa:
                return "OK dane"
        return "NOTFOUND "
    except Temporary as why:
        return f"TEMP {why}"


def netstring(text: str) -> bytes:
    data = text.encode()
    return b"%d:%s," % (len(data), data)


async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while True:
            length = int((await reader.readuntil(b":"))[:-1])
            request = (await reader.readexactly(length + 1))[:-1].decode(errors="replace")
            _, _, key = request.partition(" ")
            writer.write(netstring(await policy(key.strip().lower())))
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError, ValueError):
        pass
    finally:
        writer.close()


async def main(address: str, port: int) -> None:
    server = await asyncio.start_server(serve, address, port)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], int(sys.argv[2])))
