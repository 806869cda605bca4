"""Screenshots of the console for the docs: a real ``serve`` on a temporary
data directory, a few CVMs (one with its agent connected throughout and its
evidence verified, one whose agent went away, one waiting for its agent), and a
PNG of each page. The serve trusts the test-only AMD signer's roots, so the
verified evidence needs no SEV-SNP machine (tests.console.attested).

Run by ``scripts/screenshots [OUT_DIR]`` (default docs/screenshots)."""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
from playwright.sync_api import ViewportSize, expect

from tests.client.service import Service, _served
from tests.console import attested
from tests.console.browser import Page, chromium_path, launch, sign_in
from tests.served import DOMAIN

DESKTOP: ViewportSize = {"width": 1280, "height": 860}
PHONE: ViewportSize = {"width": 375, "height": 812}
# Long enough for a few dozen uptime samples (one a second here).
SEEDED_SECONDS = 40


class Seeder:
    def __init__(self, service: Service) -> None:
        self.service = service
        self.http = httpx.Client(
            base_url=f"{service.url}/{DOMAIN}",
            headers={"Authorization": f"Bearer {service.token}"},
            timeout=10,
        )

    def create(self, name: str, vcpus: int, platform: str, **extra: str) -> str:
        body = {"name": name, **extra}
        response = self.http.post(f"/cvms/external/{vcpus}/{platform}", json=body)
        response.raise_for_status()
        cvm_id: str = response.json()["id"]
        return cvm_id

    def agent(self, label: str, cvm_id: str) -> None:
        config = self.http.get(f"/cvms/{cvm_id}/agent_config").raise_for_status().json()
        self.service.start_agent(label, config)

    def attest(self, cvm_id: str) -> None:
        """Its agent sends the test signer's evidence, which verifies (tests.console.attested)."""
        config = self.http.get(f"/cvms/{cvm_id}/agent_config").raise_for_status().json()

        def verified() -> bool:
            cvm = self.http.get(f"/cvms/{cvm_id}").raise_for_status().json()
            if cvm["attestation_error"]:
                raise SystemExit(f"the seeded evidence was refused: {cvm['attestation_error']}")
            return bool(cvm["attestation_token"])

        report = attested.evidence(str(config["client_cert"]).encode())
        attested.send_evidence(self.service.agents_port, config, report, verified)

    def seed(self) -> str:
        """The CVMs to show; the id of the one the details shots are of."""
        web = self.create("web-frontend", 4, "sev-snp", agent_log_level="info")
        batch = self.create("batch-worker", 8, "tdx", agent_log_level="debug")
        self.create("ml-inference", 16, "sev-snp", agent_url="10.0.4.12:7002")
        self.attest(web)
        self.agent("agent-web", web)
        self.agent("agent-batch", batch)
        start = time.monotonic()
        time.sleep(12)
        self.service.processes.kill("agent-batch")  # it goes offline
        time.sleep(8)
        self.service.processes.kill("agent-web")  # a short outage, then back
        time.sleep(6)
        self.agent("agent-web-again", web)
        self.http.post(f"/cvms/{web}/certificates").raise_for_status()
        time.sleep(max(0.0, SEEDED_SECONDS - (time.monotonic() - start)))
        return web


def shoot(page: Page, path: Path) -> None:
    page.wait_for_timeout(400)  # fonts and the last poll settle
    page.screenshot(path=str(path), full_page=True)
    print(f"wrote {path}")


@contextmanager
def served(tmp: Path) -> Iterator[Service]:
    # _served is the fixture's generator: it yields the service, then stops it.
    yield from _served(tmp, tmp / "pycache", None, attested.ENTRY)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("out", nargs="?", default="docs/screenshots", type=Path)
    out: Path = parser.parse_args().out
    out.mkdir(parents=True, exist_ok=True)
    executable = chromium_path()
    if executable is None:
        raise SystemExit("no Chromium found: apt-get install chromium")
    with (
        tempfile.TemporaryDirectory(prefix="console-shots-") as scratch,
        served(Path(scratch)) as service,
    ):
        web = Seeder(service).seed()
        console = f"{service.url}/ui/"
        with launch(executable) as browser:
            desktop = browser.new_context(viewport=DESKTOP, color_scheme="light")
            page = desktop.new_page()
            page.goto(console)
            expect(page.get_by_label("Access token")).to_be_visible()
            shoot(page, out / "signin.png")
            sign_in(page, console, service.token)
            page.get_by_role("status").evaluate("node => node.replaceChildren()")
            expect(page.locator(".chart-card svg.chart")).to_have_count(3)
            shoot(page, out / "dashboard.png")
            page.goto(f"{console}#/cvms")
            expect(page.get_by_role("link", name="web-frontend")).to_be_visible()
            shoot(page, out / "list.png")
            page.goto(f"{console}#/create")
            page.get_by_label("Platform").select_option("tdx")
            page.get_by_label("vCPUs").select_option("4")
            page.get_by_label("Name", exact=True).fill("analytics-2")
            shoot(page, out / "create.png")
            page.goto(f"{console}#/cvms/{web}")
            expect(page.locator(".events li").first).to_be_visible()
            expect(page.locator("svg.chart")).to_be_visible()
            expect(page.locator(".verdict")).to_contain_text("Verified")
            shoot(page, out / "details.png")

            phone = browser.new_context(viewport=PHONE, color_scheme="light", device_scale_factor=2)
            small = phone.new_page()
            sign_in(small, console, service.token)
            small.goto(f"{console}#/cvms/{web}")
            expect(small.locator("svg.chart")).to_be_visible()
            expect(small.locator(".verdict")).to_contain_text("Verified")
            small.get_by_role("status").evaluate("node => node.replaceChildren()")
            shoot(small, out / "details-phone.png")


if __name__ == "__main__":
    main()
