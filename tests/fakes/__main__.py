"""Run one cloud's fake for a walk-through: ``python -m tests.fakes gcp``.

Starts the fake on loopback (aws: moto's EC2 behind the ClientToken-keeping
front; gcp: the Compute Engine fake; azure: the ARM fake), writes a provider
file pointing that cloud's real driver at it into the service's providers
directory (``./.prism-backends/providers`` unless ``--providers-dir``), and
serves until interrupted. Start (or restart) ``./scripts/serve`` afterwards.
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import socket
import sys
import threading
from pathlib import Path

from tests.fakes import azure_arm, ec2_front, gcp_compute

AWS_ENV = "AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _aws() -> str:
    import os

    import boto3
    from moto.server import ThreadedMotoServer

    os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
    port = _free_port()
    ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False).start()
    _server, url = ec2_front.serve(ec2_front.Ec2Front(f"http://127.0.0.1:{port}"))
    ec2 = boto3.client("ec2", region_name="us-east-2", endpoint_url=url)
    image = ec2.describe_images()["Images"][0]["ImageId"]
    return (
        f'name = "aws"\nenabled = true\n[config]\nregion = "us-east-2"\n'
        f'image_id = "{image}"\nendpoint_url = "{url}"\nvcpusSEV = [2, 4, 8]\n'
    )


def _gcp() -> str:
    _server, url = gcp_compute.serve(gcp_compute.FakeCompute())
    return (
        f'name = "gcp"\nenabled = true\n[config]\nproject_id = "walk-through"\n'
        f'region = "us-central1"\n'
        f'image = "projects/ubuntu-os-cloud/global/images/family/ubuntu-2404-lts"\n'
        f'api_endpoint = "{url}"\nanonymous_credentials = true\n'
        f"vcpusSEV = [2, 4, 8]\nvcpusTDX = [4, 8]\n"
    )


def _azure() -> str:
    _server, url = azure_arm.serve(azure_arm.FakeArm(operation_seconds=3.0))
    subnet = (
        "/subscriptions/walk-through/resourceGroups/prism/providers/Microsoft.Network"
        "/virtualNetworks/prism/subnets/default"
    )
    return (
        f'name = "azure"\nenabled = true\n[config]\nsubscription_id = "walk-through"\n'
        f'resource_group = "prism"\nlocation = "westeurope"\n'
        f'image = "Canonical:0001-com-ubuntu-confidential-vm-jammy:22_04-lts-cvm:latest"\n'
        f'subnet_id = "{subnet}"\nbase_url = "{url}"\nanonymous_credentials = true\n'
        f"vcpusSEV = [2, 4, 8]\nvcpusTDX = [2, 4, 8]\n"
    )


CLOUDS = {"aws": _aws, "gcp": _gcp, "azure": _azure}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.fakes", description=__doc__)
    parser.add_argument("cloud", choices=sorted(CLOUDS))
    parser.add_argument(
        "--providers-dir",
        type=Path,
        default=Path(".prism-backends/providers"),
        help="where the service reads provider files (default: %(default)s)",
    )
    args = parser.parse_args(argv)
    provider_file = args.providers_dir / f"{args.cloud}.toml"
    args.providers_dir.mkdir(parents=True, exist_ok=True)
    provider_file.write_text(CLOUDS[args.cloud]())
    print(f"{args.cloud} fake running; wrote {provider_file}:\n")
    print(provider_file.read_text())
    prefix = f"{AWS_ENV} " if args.cloud == "aws" else ""
    print(f"now start the service: {prefix}./scripts/serve   (Ctrl-C here stops the fake)")
    sys.stdout.flush()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with contextlib.suppress(KeyboardInterrupt):
        stop.wait()
    provider_file.unlink(missing_ok=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
