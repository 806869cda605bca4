"""The bare anchor of ``agents_streams``: what grpc.aio alone costs for the agents' work.

The same ``cvms.Service/Process`` over the same mutual TLS (the CA and server
certificate the service keeps in its data directory) with the service's server
options, and the same heartbeat: every ``--heartbeat`` seconds one
``agentStateReq`` to each open stream, its answer read. Each stream's client
certificate is read and parsed (its common name and serial), as the service
does before it looks the certificate up. Nothing else: no store, no sessions,
no sampler, no limits, no logging per stream. Whatever the service spends
beyond this is its own.

    python -m bench.agents_anchor --data-dir DIR --port PORT [--heartbeat 10]

It prints ``listening on PORT`` once the port is bound.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
import uuid
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import grpc
from cryptography import x509
from cryptography.x509.oid import NameOID

from prism_backends.agents.pki import load_or_create_ca, load_or_create_server_credentials
from prism_backends.agents.proto import cvms_pb2, cvms_pb2_grpc
from prism_backends.agents.server import server_options
from prism_backends.heap import settle_heap

SERVER_NAMES = ["127.0.0.1", "localhost"]


class Stream:
    """One open stream: what the heartbeat writes to it."""

    __slots__ = ("cvm_id", "outbox")

    def __init__(self, cvm_id: str) -> None:
        self.cvm_id = cvm_id
        self.outbox: asyncio.Queue[cvms_pb2.ServerStreamMessage] = asyncio.Queue()


class BareService(cvms_pb2_grpc.ServiceServicer):
    def __init__(self) -> None:
        self.streams: set[Stream] = set()
        self.answers = 0

    async def Process(  # noqa: N802 - the name is the protocol's
        self,
        request_iterator: AsyncIterator[cvms_pb2.ClientStreamMessage],
        context: grpc.aio.ServicerContext[
            cvms_pb2.ClientStreamMessage, cvms_pb2.ServerStreamMessage
        ],
    ) -> AsyncIterator[cvms_pb2.ServerStreamMessage]:
        pem = next(iter(context.auth_context()["x509_pem_cert"]))
        certificate = x509.load_pem_x509_certificate(pem)
        names = certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        stream = Stream(str(names[0].value) if names else format(certificate.serial_number, "x"))
        stream.outbox.put_nowait(state_request())  # the first, as the service's attach sends
        self.streams.add(stream)
        reader = asyncio.create_task(self._read(request_iterator))
        try:
            while not reader.done():
                yield await stream.outbox.get()
        finally:
            self.streams.discard(stream)
            reader.cancel()

    async def _read(self, messages: AsyncIterator[cvms_pb2.ClientStreamMessage]) -> None:
        async for message in messages:
            if message.WhichOneof("message") == "agentStateRes":
                self.answers += 1

    async def heartbeat(self, seconds: float) -> None:
        while True:
            await asyncio.sleep(seconds)
            for stream in list(self.streams):
                stream.outbox.put_nowait(state_request())


def state_request() -> cvms_pb2.ServerStreamMessage:
    return cvms_pb2.ServerStreamMessage(agentStateReq=cvms_pb2.AgentStateReq(id=uuid.uuid4().hex))


async def serve(data_dir: Path, port: int, heartbeat: float) -> None:
    ca = load_or_create_ca(data_dir)
    chain, key = load_or_create_server_credentials(data_dir, ca, SERVER_NAMES)
    credentials = grpc.ssl_server_credentials(
        [(key, chain)], root_certificates=ca.cert_pem, require_client_auth=True
    )
    server = grpc.aio.server(options=server_options(share_port=False))
    service = BareService()
    cvms_pb2_grpc.add_ServiceServicer_to_server(service, server)
    bound = server.add_secure_port(f"127.0.0.1:{port}", credentials)
    await server.start()
    print(f"listening on {bound}", flush=True)
    beating = asyncio.create_task(service.heartbeat(heartbeat))
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
    await stopping.wait()
    beating.cancel()
    await server.stop(1.0)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.agents_anchor", description=__doc__)
    parser.add_argument("--data-dir", type=Path, required=True, help="the service's data dir")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--heartbeat", type=float, default=10.0, help="seconds between rounds")
    args = parser.parse_args(argv)
    settle_heap()  # as the service's agents command does before its streams
    asyncio.run(serve(args.data_dir, args.port, args.heartbeat))
    return 0


if __name__ == "__main__":
    sys.exit(main())
