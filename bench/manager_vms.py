"""Real VMs through ``serve --local-manager``: how long from POST to running and
from DELETE to no process, and how many VMs one manager holds here.

Usage::

    uv run python -m bench.manager_vms [--vms 8] [--parallel 2] [--keep-images DIR]

What it does, in order:

1. starts ``prism-backends serve --local-manager`` in a fresh data directory
   (the guest image is built on first use, or taken from ``--keep-images``);
2. creates ``--vms`` ultraviolet CVMs of 1 vCPU, ``--parallel`` at a time
   (two boots at a time is what two cores give under emulation), and for each
   measures the seconds from POST to ``status == running`` (the agent inside
   has dialled in over mutual TLS);
3. with all of them running, reads each QEMU's resident memory and, over 10 s,
   the CPU they use idle;
4. deletes them one by one, measuring the seconds from DELETE to the QEMU
   process being gone and its directory removed;
5. prints a table and writes it as JSON to ``bench/results/manager_vms.json``.

It asserts nothing about speed.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx

DOMAIN = "bench-vms"
TICKS = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Serve:
    def __init__(self, root: Path, images: Path | None) -> None:
        self.data_dir = root / "data"
        port = free_port()
        self.base = f"http://127.0.0.1:{port}/backends/{DOMAIN}"
        environment = {**os.environ, "PRISM_BACKENDS_POLL_SECONDS": "0.2"}
        if images is not None:
            environment["PRISM_MANAGER_IMAGES_DIR"] = str(images)
        self.log = (root / "serve.log").open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "prism_backends", "serve", "--local-manager",
             "--data-dir", str(self.data_dir), "--port", str(port),
             "--agents-port", str(free_port()), "--log-level", "warning"],
            stdout=self.log, stderr=self.log, env=environment,
        )  # fmt: skip
        started = time.monotonic()
        while True:
            if self.process.poll() is not None:
                raise SystemExit(f"serve exited; see {root / 'serve.log'}")
            try:
                if httpx.get(f"{self.base[: -len(DOMAIN) - 1]}/openapi.json").status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.5)
        self.ready_seconds = time.monotonic() - started
        token = subprocess.run(
            [sys.executable, "-m", "prism_backends", "token", "issue", "--domain", DOMAIN,
             "--data-dir", str(self.data_dir)],
            capture_output=True, text=True, check=True,
        ).stdout.strip()  # fmt: skip
        self.client = httpx.Client(headers={"Authorization": f"Bearer {token}"}, timeout=30)

    def cvm(self, cvm_id: str) -> dict[str, Any]:
        data: dict[str, Any] = self.client.get(f"{self.base}/cvms/{cvm_id}").json()
        return data

    def stop(self) -> None:
        self.client.close()
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            self.process.wait(60)
        self.log.close()


def boot(serve: Serve, index: int) -> dict[str, Any]:
    started = time.monotonic()
    reply = serve.client.post(
        f"{serve.base}/cvms/ultraviolet/1/sev-snp", json={"name": f"vm-{index}"}
    )
    reply.raise_for_status()
    cvm_id = reply.json()["id"]
    while serve.cvm(cvm_id)["status"] != "running":
        if time.monotonic() - started > 600:
            raise SystemExit(f"vm-{index} did not come up in 600 s")
        time.sleep(0.25)
    cvm = serve.cvm(cvm_id)
    record = json.loads(
        (serve.data_dir / "manager" / "vms" / cvm["cvm_id"] / "vm.json").read_text()
    )
    return {"id": cvm_id, "vm": cvm["cvm_id"], "pid": record["pid"],
            "to_running_s": time.monotonic() - started}  # fmt: skip


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def delete(serve: Serve, vm: dict[str, Any]) -> float:
    directory = serve.data_dir / "manager" / "vms" / vm["vm"]
    started = time.monotonic()
    serve.client.delete(f"{serve.base}/cvms/{vm['id']}").raise_for_status()
    while Path(f"/proc/{vm['pid']}").exists() or directory.exists():
        time.sleep(0.02)
    return time.monotonic() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--vms", type=int, default=8)
    parser.add_argument("--parallel", type=int, default=2)
    parser.add_argument("--keep-images", type=Path, default=None,
                        help="cache guest images here across runs")  # fmt: skip
    arguments = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-vms-") as scratch:
        serve = Serve(Path(scratch), arguments.keep_images)
        try:
            with ThreadPoolExecutor(arguments.parallel) as pool:
                vms = list(pool.map(lambda i: boot(serve, i), range(arguments.vms)))
            before = {vm["pid"]: cpu_seconds(vm["pid"]) for vm in vms}
            time.sleep(10)
            idle = [(cpu_seconds(pid) - seconds) / 10 for pid, seconds in before.items()]
            memory = [rss_mib(vm["pid"]) for vm in vms]
            all_up = all(serve.cvm(vm["id"])["status"] == "running" for vm in vms)
            deletes = [delete(serve, vm) for vm in vms]
        finally:
            serve.stop()
    boots = [vm["to_running_s"] for vm in vms]
    result = {
        "vms": arguments.vms,
        "parallel": arguments.parallel,
        "serve_ready_s": round(serve.ready_seconds, 1),
        "post_to_running_s": {
            "min": min(boots),
            "median": statistics.median(boots),
            "max": max(boots),
        },
        "delete_to_no_process_s": {"median": statistics.median(deletes), "max": max(deletes)},
        "qemu_rss_mib": {"median": statistics.median(memory), "total": sum(memory)},
        "idle_cpu_share_per_vm": statistics.median(idle),
        "all_running_together": all_up,
    }
    print(
        f"serve --local-manager ready in {result['serve_ready_s']} s (includes a first image build)"
    )
    print(f"{'':28}{'min':>8}{'median':>8}{'max':>8}")
    middle = statistics.median(boots)
    print(f"{'POST -> running (s)':28}{min(boots):8.1f}{middle:8.1f}{max(boots):8.1f}")
    print(
        f"{'DELETE -> no process (s)':28}{'':8}{statistics.median(deletes):8.2f}{max(deletes):8.2f}"
    )
    print(f"{arguments.vms} VMs running together: {all_up}; QEMU RSS median "
          f"{statistics.median(memory):.0f} MiB, total {sum(memory):.0f} MiB; idle CPU per VM "
          f"{100 * statistics.median(idle):.1f} % of a core")  # fmt: skip
    out = Path(__file__).parent / "results" / "manager_vms.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
