"""The attestation policy of a VM the manager launched.

For SEV-SNP launches of a kernel, initrd and command line through OVMF with
kernel hashes, the launch measurement is computed with ``sev-snp-measure``
from the very files and vCPU count used; the policy carries it with the guest
policy bits and host data. Rendered as go-sev-guest ``check.Config`` JSON (what
the backend appraises against) or as a CoRIM (what Cocos' manager serves).
TDX measurements (MRTD, RTMRs) need the TD's firmware layout and are not
computed here: a TDX policy pins the platform, not the image.
"""

from __future__ import annotations

import base64
import json
from typing import Any

from prism_backends.manager import corim
from prism_backends.manager.qemu import Launch, VmLaunch, default_cpu

# Cocos' default guest policy: SMT allowed (bit 16), reserved bit 17 set.
DEFAULT_GUEST_POLICY = 0x30000
# SEV-ES / SNP guest features QEMU turns on for SNP guests (SNPActive).
GUEST_FEATURES = 0x1
# CPUID family/model/stepping signatures sev-snp-measure expects per CPU model.
VCPU_TYPES = {"EPYC-v4": "EPYC-v4", "EPYC": "EPYC", "host": "EPYC-v4"}


class PolicyUnavailable(Exception):
    """This VM's launch cannot be described by a policy; the message says why."""


def policy_inputs(vm: VmLaunch, host_data: str) -> dict[str, Any]:
    """What the policy depends on, kept in the VM's record."""
    return {
        "platform": vm.launch.value,
        "vcpus": vm.vcpus,
        "vcpu_type": VCPU_TYPES.get(default_cpu(vm), "EPYC-v4"),
        "ovmf": str(vm.firmware.ovmf) if vm.firmware.ovmf else "",
        "igvm": str(vm.firmware.igvm) if vm.firmware.igvm else "",
        "kernel": str(vm.firmware.kernel),
        "initrd": str(vm.firmware.initrd),
        "append": vm.firmware.append,
        "kernel_hashes": vm.sev_snp.kernel_hashes,
        "host_data": host_data,
        "guest_policy": DEFAULT_GUEST_POLICY,
    }


def snp_measurement(inputs: dict[str, Any]) -> bytes:
    """The SEV-SNP launch digest of these inputs (48 bytes), by sev-snp-measure."""
    from sevsnpmeasure import guest, vcpu_types
    from sevsnpmeasure.sev_mode import SevMode
    from sevsnpmeasure.vmm_types import VMMType

    if inputs.get("igvm"):
        raise PolicyUnavailable("IGVM launches are measured by igvmmeasure, not computed here")
    if not inputs.get("ovmf"):
        raise PolicyUnavailable("no OVMF is configured: the launch measurement cannot be computed")
    if not inputs.get("kernel_hashes", True):
        raise PolicyUnavailable("without kernel-hashes the kernel is not part of the measurement")
    try:
        return bytes(
            guest.calc_launch_digest(
                SevMode.SEV_SNP,
                int(inputs["vcpus"]),
                vcpu_types.CPU_SIGS[inputs["vcpu_type"]],
                inputs["ovmf"],
                inputs["kernel"],
                inputs["initrd"],
                inputs["append"],
                GUEST_FEATURES,
                vmm_type=VMMType.QEMU,
            )
        )
    except (OSError, ValueError, RuntimeError) as exc:
        raise PolicyUnavailable(f"sev-snp-measure could not measure this launch: {exc}") from exc


def snp_check_config(measurement: bytes, inputs: dict[str, Any]) -> dict[str, Any]:
    """go-sev-guest ``check.Config`` (snake_case, bytes as base64), as Cocos writes it."""
    policy: dict[str, Any] = {
        "measurement": base64.b64encode(measurement).decode(),
        "policy": int(inputs.get("guest_policy", DEFAULT_GUEST_POLICY)),
        "vmpl": 0,
        "minimum_build": 0,
        "minimum_version": "0.0",
    }
    if inputs.get("host_data"):
        policy["host_data"] = inputs["host_data"]
    return {"policy": policy, "root_of_trust": {"product_line": "Milan", "check_crl": True}}


def render_policy(inputs: dict[str, Any], policy_format: str) -> bytes:
    if inputs.get("platform") != Launch.SEV_SNP.value:
        raise PolicyUnavailable(
            "only SEV-SNP launches get a computed policy; TDX measurements are not computed here"
        )
    measurement = snp_measurement(inputs)
    config = snp_check_config(measurement, inputs)
    if policy_format == "json":
        return json.dumps(config, indent=2, sort_keys=True).encode()
    return corim.snp_reference_corim(
        measurement=measurement,
        guest_policy=int(config["policy"]["policy"]),
        host_data=base64.b64decode(inputs["host_data"]) if inputs.get("host_data") else b"",
    )
