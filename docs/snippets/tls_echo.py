"""DICOM over TLS with mutual authentication; both sides in this one program.

Needs PEM files in ./certs: ca.pem (the CA both sides trust), server.pem/server.key and
client.pem/client.key (certificates that CA issued).
"""

import anyio

from aionetdicom import AE, tls

server_context = tls.server_context("certs/server.pem", "certs/server.key", ca="certs/ca.pem")
client_context = tls.client_context(
    ca="certs/ca.pem", cert="certs/client.pem", key="certs/client.key"
)

scp = AE("TLS_SCP")


async def main() -> None:
    async with scp.serve("127.0.0.1", 0, ssl_context=server_context) as server:
        ae = AE("MY_SCU")
        async with ae.associate(
            "127.0.0.1", server.port, called_ae_title="TLS_SCP", ssl_context=client_context
        ) as assoc:
            assert assoc.tls is not None  # None on plain TCP
            print(assoc.tls.version, assoc.tls.cipher)
            print("server certificate:", assoc.tls.peer_certificate["subject"])
            print(repr(await assoc.echo()))
        await server.aclose()


anyio.run(main)
