"""Many agents in one process: each a real mutual-TLS stream of Cocos'
``cvms.Service/Process`` with its own CVM's credential, answering every
``agentStateReq``, and reconnecting (to the next replica in its list, as a
load balancer that drops a failing backend would) whenever its stream ends.
"""

from __future__ import annotations

import asyncio
import random
import threading
from dataclasses import dataclass, field
from typing import Any

import grpc

from prism_backends.agents.proto import cvms_pb2, cvms_pb2_grpc

SERVER_NAME = "localhost"


@dataclass
class SwarmAgent:
    cvm_id: str
    ca_cert: bytes
    client_cert: bytes
    client_key: bytes
    addresses: list[str]  # replicas, the preferred one first
    connects: int = 0
    answered: int = 0
    current: str = ""
    ends: list[str] = field(default_factory=list)  # why each stream ended

    @classmethod
    def of(cls, config: dict[str, Any], addresses: list[str]) -> SwarmAgent:
        return cls(
            cvm_id=config["cvm_id"],
            ca_cert=config["ca_cert"].encode(),
            client_cert=config["client_cert"].encode(),
            client_key=config["client_key"].encode(),
            addresses=addresses,
        )


class Swarm:
    def __init__(self, agents: list[SwarmAgent]) -> None:
        self.agents = agents
        self._loop = asyncio.new_event_loop()
        self._stopping: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._main, name="swarm", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        if self._stopping is not None:
            self._loop.call_soon_threadsafe(self._stopping.set)
        self._thread.join(30)

    def _main(self) -> None:
        try:
            self._loop.run_until_complete(self._all())
        finally:
            # An unclosed loop leaves its self-pipe sockets to the collector, whose
            # ResourceWarning then fails whichever later test it happens to run in.
            self._loop.close()

    async def _all(self) -> None:
        self._stopping = asyncio.Event()
        tasks = [asyncio.create_task(self._run(agent)) for agent in self.agents]
        await self._stopping.wait()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _run(self, agent: SwarmAgent) -> None:
        credentials = grpc.ssl_channel_credentials(
            root_certificates=agent.ca_cert,
            private_key=agent.client_key,
            certificate_chain=agent.client_cert,
        )
        rng = random.Random(agent.cvm_id)
        index = 0
        while True:
            address = agent.addresses[index % len(agent.addresses)]
            agent.ends.append(await self._stream(agent, address, credentials))
            index += 1
            await asyncio.sleep(rng.uniform(0.2, 0.5))

    async def _stream(
        self, agent: SwarmAgent, address: str, credentials: grpc.ChannelCredentials
    ) -> str:
        options = [("grpc.ssl_target_name_override", SERVER_NAME)]
        async with grpc.aio.secure_channel(address, credentials, options=options) as channel:
            call = cvms_pb2_grpc.ServiceStub(channel).Process(metadata=(("job-id", agent.cvm_id),))
            try:
                while True:
                    message = await call.read()
                    if message is grpc.aio.EOF:
                        return "ended"
                    assert isinstance(message, cvms_pb2.ServerStreamMessage)
                    if message.HasField("agentStateReq"):
                        if agent.current != address:
                            agent.connects += 1
                            agent.current = address
                        reply = cvms_pb2.AgentStateRes(id=message.agentStateReq.id, state="Running")
                        await call.write(cvms_pb2.ClientStreamMessage(agentStateRes=reply))
                        agent.answered += 1
            except grpc.aio.AioRpcError as error:
                return f"{error.code().name}: {error.details()}"
            finally:
                agent.current = ""
