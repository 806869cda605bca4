"""Evidence the console can show a verdict for, with no network and no TEE.

The service trusts AMD's bundled roots; evidence that verifies and is bound to
a fresh agent certificate can only come from the test-only AMD signer
(tests/attestation/snp/signer.py). So, as tests/agents/test_attestation_e2e
injects the signer's roots into its runtime, ``python -m tests.console.attested
serve ...`` runs the real command line with the signer's Milan roots in place
of AMD's: ``ENTRY`` prepares the data directory with them (``ROOTS_FILE``, ASK
then ARK), and the serve process reads them back (each process makes keys of
its own, so the roots travel as a file). ``send_evidence`` is the CVM's agent:
it dials the agents endpoint with the CVM's agent configuration and sends the
signer's report, bound to that configuration's certificate (or to another)."""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from functools import cached_property
from pathlib import Path
from typing import Any
from unittest import mock

from cryptography.hazmat.primitives import serialization

from prism_backends.agents.proto import cvms_pb2, cvms_pb2_grpc
from prism_backends.attestation.appraisal import Anchors
from prism_backends.attestation.snp import abi
from prism_backends.attestation.snp.roots import bundled_roots as snp_bundled_roots
from prism_backends.attestation.snp.trust import product_roots_from_pem
from prism_backends.attestation.tdx.roots import bundled_roots as tdx_bundled_roots
from prism_backends.runtime import Runtime
from tests.agents.conftest import Credential, channel_of, receive
from tests.attestation.snp import signer
from tests.client.service import Entry

ROOTS_FILE = "test-snp-milan-roots.pem"
GUEST_POLICY = 0x20000  # the reserved bit 17 set, SMT (bit 16) off
# From the evidence written to its appraisal shown by GET .../cvms/{id}, on a busy machine.
APPRAISAL_TIMEOUT = 30.0


def _write_signer_roots(data_dir: Path) -> None:
    hierarchy = signer.hierarchy(abi.MILAN)
    pem = serialization.Encoding.PEM
    (data_dir / ROOTS_FILE).write_bytes(
        hierarchy.ask.public_bytes(pem) + hierarchy.ark.public_bytes(pem)
    )


ENTRY = Entry(module=__name__, prepare=_write_signer_roots)


def _anchors_with_signer_roots(runtime: Runtime) -> Anchors:
    bundle = (runtime.settings.data_dir / ROOTS_FILE).read_bytes()
    snp_roots = {**snp_bundled_roots(), abi.MILAN: product_roots_from_pem(abi.MILAN, bundle)}
    return Anchors(snp_roots=snp_roots, tdx_roots=tdx_bundled_roots())


def evidence(bound_to: bytes) -> bytes:
    """A Milan report from the signer whose report data binds ``bound_to`` (an agent's
    certificate PEM, as the reference agent binds its own), with its VCEK attached."""
    vcek = signer.hierarchy(abi.MILAN).endorsement(tcb=signer.MILAN_TCB, chip_id=signer.CHIP_ID)
    # SMT off: the served reference policy (tests.client.service.POLICY) does not allow it.
    spec = signer.ReportSpec(policy=GUEST_POLICY, report_data=hashlib.sha512(bound_to).digest())
    return signer.signed(spec, vcek) + abi.encode_cert_table([(abi.VCEK_GUID, vcek.der)])


def send_evidence(
    agents_port: int,
    config: Mapping[str, Any],
    report: bytes,
    appraised: Callable[[], bool],
) -> None:
    """Dial in as the agent of ``config`` (GET .../agent_config), send ``report``
    and stay until ``appraised()`` says the service has judged it. Runs its own
    event loop on a thread of its own, so any thread may call it."""
    credential = Credential(
        cvm_id=str(config["cvm_id"]),
        ca_cert=str(config["ca_cert"]).encode(),
        client_cert=str(config["client_cert"]).encode(),
        client_key=str(config["client_key"]).encode(),
    )

    async def agent() -> None:
        async with channel_of(agents_port, credential) as channel:
            call = cvms_pb2_grpc.ServiceStub(channel).Process(
                metadata=(("job-id", credential.cvm_id),)
            )
            await receive(call, "agentStateReq")
            await call.write(
                cvms_pb2.ClientStreamMessage(
                    vTPMattestationReport=cvms_pb2.AttestationResponse(file=report)
                )
            )
            deadline = time.monotonic() + APPRAISAL_TIMEOUT
            while not await asyncio.to_thread(appraised):
                if time.monotonic() > deadline:
                    raise AssertionError(f"no verdict within {APPRAISAL_TIMEOUT:.0f} s")
                await asyncio.sleep(0.1)
            call.cancel()

    with ThreadPoolExecutor(1, thread_name_prefix="evidence") as pool:
        pool.submit(asyncio.run, agent()).result()


def main() -> None:
    from prism_backends.cli.entry import main as command_line

    trusting = cached_property(_anchors_with_signer_roots)
    trusting.__set_name__(Runtime, "anchors")
    with mock.patch.object(Runtime, "anchors", trusting):
        command_line()


if __name__ == "__main__":
    main()
