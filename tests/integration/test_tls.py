"""DICOM over TLS (PS3.15 B.12): our SCU and SCP, certificates made with trustme."""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path

import anyio
import pytest
import trustme
from pydicom.dataset import Dataset

from aionetdicom import AE, sop_classes
from aionetdicom.contexts import PresentationContext
from aionetdicom.errors import DicomNetworkError, TLSError
from aionetdicom.services.qr_scp import query_retrieve_contexts
from aionetdicom.services.storage import StoreRequest, storage_contexts
from aionetdicom.tls import client_context, server_context
from tests.dicom_files import CT_IMAGE_STORAGE, make_ct

HOST = "127.0.0.1"
LIMIT = 20.0


@dataclass
class Identity:
    """PEM files of one party: certificate chain and key, and the CA that trusts it."""

    cert: Path
    key: Path
    ca: Path


def issue(ca: trustme.CA, folder: Path, name: str) -> Identity:
    folder.mkdir(parents=True, exist_ok=True)
    leaf = ca.issue_cert(HOST, "localhost", common_name=name)
    cert, key, authority = folder / f"{name}.pem", folder / f"{name}.key", folder / "ca.pem"
    leaf.cert_chain_pems[0].write_to_path(str(cert))
    leaf.private_key_pem.write_to_path(str(key))
    ca.cert_pem.write_to_path(str(authority))
    return Identity(cert, key, authority)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Identity]:
    """A server and a client identity from one CA, and a stranger from another CA."""
    folder = tmp_path_factory.mktemp("pki")
    ca, other = trustme.CA(), trustme.CA()
    return {
        "server": issue(ca, folder / "server", "server"),
        "client": issue(ca, folder / "client", "client"),
        "stranger": issue(other, folder / "stranger", "stranger"),
    }


def make_scp(seen: list[object], *, acse_timeout: float = 30.0) -> AE:
    scp = AE(
        "TLS_SCP",
        acse_timeout=acse_timeout,
        supported_contexts=[
            PresentationContext(sop_classes.VERIFICATION),
            *storage_contexts([CT_IMAGE_STORAGE]),
        ],
    )

    @scp.on_echo
    async def on_echo(request: object) -> int:
        seen.append(request.assoc.tls)  # type: ignore[attr-defined]
        return 0

    @scp.on_store
    async def on_store(request: StoreRequest) -> int:
        seen.append(request.sop_instance_uid)
        return 0

    return scp


def mutual(pki: dict[str, Identity]) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    server, client = pki["server"], pki["client"]
    return (
        server_context(server.cert, server.key, ca=server.ca),
        client_context(ca=client.ca, cert=client.cert, key=client.key),
    )


async def test_mutual_tls_echo_and_store(pki: dict[str, Identity]) -> None:
    """Both sides authenticated; DIMSE works as over TCP; each side sees the other's
    certificate and a TLS 1.2+ AEAD cipher."""
    seen: list[object] = []
    server_ctx, client_ctx = mutual(pki)
    ds = make_ct(seed=1)
    contexts = [
        PresentationContext(sop_classes.VERIFICATION),
        PresentationContext(CT_IMAGE_STORAGE),
    ]
    with anyio.fail_after(LIMIT):
        async with (
            make_scp(seen).serve(HOST, 0, ssl_context=server_ctx) as server,
            AE("TLS_SCU").associate(
                HOST, server.port, contexts=contexts, ssl_context=client_ctx
            ) as assoc,
        ):
            assert (await assoc.echo()).is_success
            assert (await assoc.store(ds)).is_success
            ours = assoc.tls
    assert ours is not None
    assert ours.version in ("TLSv1.2", "TLSv1.3")
    assert "GCM" in ours.cipher or "CHACHA20" in ours.cipher
    assert ("commonName", "server") in ours.peer_certificate["subject"][-1]
    theirs = seen[0]
    assert theirs is not None
    assert ("commonName", "client") in theirs.peer_certificate["subject"][-1]  # type: ignore[attr-defined]
    assert seen[1] == ds.SOPInstanceUID


async def test_client_without_a_certificate_is_refused(pki: dict[str, Identity]) -> None:
    """The server requires client certificates: a client without one gets no
    association; the server counts the failed handshake and goes on serving."""
    seen: list[object] = []
    server_ctx, good = mutual(pki)
    anonymous = client_context(ca=pki["client"].ca)
    with anyio.fail_after(LIMIT):
        async with make_scp(seen).serve(HOST, 0, ssl_context=server_ctx) as server:
            with pytest.raises(DicomNetworkError):
                async with AE("TLS_SCU").associate(
                    HOST, server.port, ssl_context=anonymous
                ) as assoc:
                    await assoc.echo()
            while server.failed_handshakes < 1:  # noqa: ASYNC110 - a counter, no event
                await anyio.sleep(0.01)
            async with AE("TLS_SCU").associate(HOST, server.port, ssl_context=good) as assoc:
                assert (await assoc.echo()).is_success
    assert len(seen) == 1


async def test_a_server_from_an_untrusted_ca_is_refused(pki: dict[str, Identity]) -> None:
    """The client verifies the server: a certificate from another CA fails the handshake."""
    stranger = pki["stranger"]
    server_ctx = server_context(stranger.cert, stranger.key)
    with anyio.fail_after(LIMIT):
        async with make_scp([]).serve(HOST, 0, ssl_context=server_ctx) as server:
            with pytest.raises(TLSError, match="certificate verify failed"):
                async with AE("TLS_SCU").associate(
                    HOST, server.port, ssl_context=client_context(ca=pki["client"].ca)
                ):
                    pass


async def test_hostname_checked_only_when_asked(pki: dict[str, Identity]) -> None:
    """check_hostname=True: the certificate names 127.0.0.1, so connecting by that name
    works and a wrong server_hostname fails."""
    server = pki["server"]
    server_ctx = server_context(server.cert, server.key)
    checking = client_context(ca=server.ca, check_hostname=True)
    with anyio.fail_after(LIMIT):
        async with make_scp([]).serve(HOST, 0, ssl_context=server_ctx) as scp:
            async with AE("TLS_SCU").associate(HOST, scp.port, ssl_context=checking) as assoc:
                assert (await assoc.echo()).is_success
            with pytest.raises(TLSError):
                async with AE("TLS_SCU").associate(
                    HOST, scp.port, ssl_context=checking, server_hostname="pacs.example"
                ):
                    pass


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1_1 is deprecated")
async def test_tls_1_1_is_refused(pki: dict[str, Identity]) -> None:
    """PS3.15 B.12 (BCP 195): nothing older than TLS 1.2."""
    server = pki["server"]
    old = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    old.load_verify_locations(str(server.ca))
    old.check_hostname = False
    old.minimum_version = ssl.TLSVersion.MINIMUM_SUPPORTED
    old.maximum_version = ssl.TLSVersion.TLSv1_1
    with anyio.fail_after(LIMIT):
        async with make_scp([]).serve(
            HOST, 0, ssl_context=server_context(server.cert, server.key)
        ) as scp:
            with pytest.raises(TLSError):
                async with AE("TLS_SCU").associate(HOST, scp.port, ssl_context=old):
                    pass
            # The server refuses it too (a protocol error, or the client closing first).
            while scp.failed_handshakes < 1:  # noqa: ASYNC110 - a counter, no event
                await anyio.sleep(0.01)
            assert scp.failed_handshakes == 1


async def test_plain_dicom_on_the_tls_port_is_closed(pki: dict[str, Identity]) -> None:
    """An A-ASSOCIATE-RQ in clear text is no TLS handshake: the connection is closed
    (no association), and TLS clients are served before and after."""
    seen: list[object] = []
    server_ctx, client_ctx = mutual(pki)
    with anyio.fail_after(LIMIT):
        async with make_scp(seen).serve(HOST, 0, ssl_context=server_ctx) as server:
            async with AE("A").associate(HOST, server.port, ssl_context=client_ctx) as assoc:
                assert (await assoc.echo()).is_success
            with pytest.raises(DicomNetworkError):
                async with AE("PLAIN").associate(HOST, server.port) as assoc:
                    await assoc.echo()
            async with AE("B").associate(HOST, server.port, ssl_context=client_ctx) as assoc:
                assert (await assoc.echo()).is_success
            while server.failed_handshakes < 1:  # noqa: ASYNC110 - counted after the close
                await anyio.sleep(0.01)
            assert server.failed_handshakes == 1
    assert len(seen) == 2


async def test_silent_connections_never_block_the_handshakes_of_others(
    pki: dict[str, Identity],
) -> None:
    """Ten connections that never start TLS: others are served meanwhile, and each of
    the ten is closed once the ACSE timeout has passed."""
    server_ctx, client_ctx = mutual(pki)
    with anyio.fail_after(LIMIT):
        async with make_scp([], acse_timeout=1.0).serve(HOST, 0, ssl_context=server_ctx) as server:
            silent = [await anyio.connect_tcp(HOST, server.port) for _ in range(10)]
            async with AE("A").associate(HOST, server.port, ssl_context=client_ctx) as assoc:
                assert (await assoc.echo()).is_success
            for stream in silent:
                with pytest.raises((anyio.EndOfStream, anyio.BrokenResourceError)):
                    await stream.receive()  # the server closes it after its timeout
                await stream.aclose()
            # The server closes a connection just before it counts the failed handshake.
            while server.failed_handshakes < 10:  # noqa: ASYNC110 - a counter, no event
                await anyio.sleep(0.01)
            assert server.failed_handshakes == 10


async def test_move_to_a_tls_destination(pki: dict[str, Identity]) -> None:
    """C-MOVE sub-operations go over TLS when known_aes gives the destination a context."""
    received: list[object] = []
    server_ctx, client_ctx = mutual(pki)
    ds = make_ct(seed=7)

    qr = AE("QR", supported_contexts=query_retrieve_contexts([sop_classes.STUDY_ROOT_MOVE]))

    @qr.on_move
    async def on_move(request: object) -> list[Dataset]:
        return [ds]

    with anyio.fail_after(LIMIT):
        async with make_scp(received).serve(HOST, 0, ssl_context=server_ctx) as dest:
            qr.known_aes = {"TLS_SCP": (HOST, dest.port, client_ctx)}
            async with (
                qr.serve(HOST, 0) as server,
                AE("SCU").associate(
                    HOST,
                    server.port,
                    contexts=[PresentationContext(sop_classes.STUDY_ROOT_MOVE)],
                ) as assoc,
            ):
                query = Dataset()
                query.QueryRetrieveLevel = "STUDY"
                query.StudyInstanceUID = ds.StudyInstanceUID
                final = None
                async for response in assoc.move(query, "TLS_SCP", model="study"):
                    final = response
    assert final is not None
    assert (final.status, final.completed) == (0x0000, 1)
    assert received == [ds.SOPInstanceUID]


def test_contexts_follow_bcp195(pki: dict[str, Identity]) -> None:
    """Both contexts refuse anything below TLS 1.2 and offer only AEAD suites."""
    server = pki["server"]
    for context in (server_context(server.cert, server.key), client_context(ca=server.ca)):
        assert context.minimum_version == ssl.TLSVersion.TLSv1_2
        names = {cipher["name"] for cipher in context.get_ciphers()}
        assert names
        assert all("GCM" in name or "CHACHA20" in name for name in names), names
        assert not any(bad in name for name in names for bad in ("NULL", "RC4", "3DES", "CBC"))
    assert server_context(server.cert, server.key, ca=server.ca).verify_mode == ssl.CERT_REQUIRED
    optional = server_context(
        server.cert, server.key, ca=server.ca, require_client_certificate=False
    )
    assert optional.verify_mode == ssl.CERT_OPTIONAL
    assert client_context(verify=False).verify_mode == ssl.CERT_NONE


async def test_pool_over_tls(pki: dict[str, Identity]) -> None:
    """An AssociationPool with an ssl_context reuses one TLS association."""
    from aionetdicom import AssociationPool

    seen: list[object] = []
    server_ctx, client_ctx = mutual(pki)
    with anyio.fail_after(LIMIT):
        async with (
            make_scp(seen).serve(HOST, 0, ssl_context=server_ctx) as server,
            AssociationPool(
                AE("POOL"), HOST, server.port, max_size=1, ssl_context=client_ctx
            ) as pool,
        ):
            for _ in range(3):
                assert (await pool.echo()).is_success
            assert pool.statistics.created == 1
    assert len(seen) == 3
    assert all(info is not None for info in seen)
