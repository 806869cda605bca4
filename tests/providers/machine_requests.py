"""What the lifecycle worker hands a driver, made for driver tests: a request
carrying a real agent certificate and key from an agents CA."""

from __future__ import annotations

from datetime import timedelta

from prism_backends.agents.pki import AgentCA, create_ca
from prism_backends.providers.base import AgentBootstrap, MachineRequest
from prism_backends.vocabulary import LogLevel, Platform


def machine_request(
    cvm_id: str,
    *,
    ca: AgentCA | None = None,
    platform: Platform = Platform.SEV_SNP,
    vcpus: int = 2,
    domain_id: str = "dom-1",
    server_url: str = "prism.example.com:7018",
) -> MachineRequest:
    authority = ca or create_ca()
    issued = authority.issue_client(cvm_id, domain_id, timedelta(days=1))
    return MachineRequest(
        cvm_id=cvm_id,
        domain_id=domain_id,
        name=cvm_id,
        platform=platform,
        vcpus=vcpus,
        agent_log_level=LogLevel.INFO,
        agent=AgentBootstrap(
            server_url=server_url,
            ca_cert_pem=authority.cert_pem,
            client_cert_pem=issued.cert_pem,
            client_key_pem=issued.key_pem,
        ),
    )
