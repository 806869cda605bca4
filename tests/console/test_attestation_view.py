"""The details page's attestation verdict in a real browser, against a real
``serve`` that trusts the test-only AMD signer's roots (tests.console.attested):
a CVM's agent sends evidence over the agents channel; what the page shows is
held to what GET /backends/{domain}/cvms/{id} answers."""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jwt
import pytest
from playwright.sync_api import expect

from tests.attestation.snp import signer
from tests.client.service import Service, serving
from tests.conftest import BACKENDS
from tests.console import attested
from tests.console.browser import BrowserContext, Page, sign_in, watch
from tests.console.test_console_e2e import _api, _console, _create, _name

pytestmark = pytest.mark.slow

PHONE_WIDTH = 375


@pytest.fixture(scope="module", params=BACKENDS)
def service(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, pycache: Path
) -> Iterator[Service]:
    yield from serving(request, tmp_path_factory, pycache, attested.ENTRY)


def _attest(service: Service, cvm_id: str, bound_to: bytes | None = None) -> dict[str, Any]:
    """The CVM's agent sends the signer's evidence, bound to its own certificate
    unless ``bound_to`` names another; the CVM as the API answers afterwards."""
    config = _api(service, f"/cvms/{cvm_id}/agent_config").json()
    report = attested.evidence(bound_to or config["client_cert"].encode())

    def judged() -> bool:
        cvm = _api(service, f"/cvms/{cvm_id}").json()
        return bool(cvm["attestation_token"] or cvm["attestation_error"])

    attested.send_evidence(service.agents_port, config, report, judged)
    cvm: dict[str, Any] = _api(service, f"/cvms/{cvm_id}").json()
    return cvm


def _fields(page: Page, group: str | None = None) -> dict[str, str]:
    """The Attestation card's fields (or one group's: "TCB", "Report"), label to text."""
    card = page.get_by_role("region", name="Attestation")
    where = card.get_by_role("region", name=f"{group} fields") if group else card
    lists = where.locator("dl.kv")
    expect(lists.first).to_be_visible()
    rows: dict[str, str] = {}
    for shown in lists.all():
        rows |= shown.evaluate(
            """(list) => Object.fromEntries([...list.querySelectorAll(":scope > dt")].map(
                 (term) => [term.textContent, term.nextElementSibling.textContent]))"""
        )
    return rows


def _fits(page: Page, width: int) -> None:
    page.set_viewport_size({"width": width, "height": 800})
    scrolled = page.evaluate("document.documentElement.scrollWidth")
    assert scrolled <= width, f"at {width} px the page scrolls sideways ({scrolled} px)"


def _open_details(page: Page, service: Service, cvm_id: str) -> None:
    sign_in(page, _console(service), service.token)
    page.goto(f"{_console(service)}#/cvms/{cvm_id}")
    expect(page.get_by_role("table", name="Agent certificates")).to_be_visible()


def test_verified_evidence_shows_the_verdict_and_the_reports_fields(
    service: Service, context: BrowserContext
) -> None:
    cvm_id = _create(service, _name("attested"))
    cvm = _attest(service, cvm_id)
    assert cvm["attestation_error"] == ""
    claims = jwt.decode(cvm["attestation_token"], options={"verify_signature": False})
    counts = _api(service, f"/cvms/{cvm_id}/statistics").json()["attestation"]

    page = context.new_page()
    problems = watch(page)
    _open_details(page, service, cvm_id)
    card = page.get_by_role("region", name="Attestation")
    expect(card.locator(".verdict")).to_contain_text("Verified")
    config = _api(service, f"/cvms/{cvm_id}/agent_config").json()
    rows = _fields(page)
    assert rows["Verified"] == str(counts["verified"]) == "1"
    assert rows["Refused"] == str(counts["failed"]) == "0"
    assert rows["Evidence"] == f"{len(base64.b64decode(cvm['attestation']))} bytes"
    assert (rows["Platform"], claims["platform"]) == ("AMD SEV-SNP", "sev-snp")
    assert rows["Measurement"] == claims["measurement"] == bytes(range(48)).hex()
    assert rows["Report data"] == claims["eat_nonce"]
    assert claims["eat_nonce"] == hashlib.sha512(config["client_cert"].encode()).hexdigest()
    assert rows["Policy digest"] == claims["policy_digest"]

    # Every field of the report and of its TCB, each under a label, none as raw JSON.
    tcb, report = _fields(page, "TCB"), _fields(page, "Report")
    assert len(tcb) == len(claims["tcb"]) and len(report) == len(claims["claims"])
    assert not [text for text in {**tcb, **report}.values() if text.startswith(("{", "["))]
    current = claims["tcb"]["current_tcb"]
    assert tcb["Current TCB"] == (
        f"BL {current['bl']} · TEE {current['tee']} · SNP {current['snp']} "
        f"· Microcode {current['microcode']}"
    )
    assert tcb["Product line"] == claims["tcb"]["product"] == "Milan"
    assert tcb["Firmware (current)"] == claims["tcb"]["current_version"]
    assert report["Guest policy"] == hex(claims["claims"]["policy"]) == hex(attested.GUEST_POLICY)
    assert report["Guest SVN"] == str(claims["claims"]["guest_svn"])
    assert report["Chip ID"] == claims["claims"]["chip_id"] == signer.CHIP_ID.hex()
    assert report["Signing key"] == claims["claims"]["signing_key"] == "VCEK"
    assert report["Chip key masked"] == ("yes" if claims["claims"]["mask_chip_key"] else "no")
    _fits(page, PHONE_WIDTH)
    assert problems == []


def test_refused_evidence_shows_the_reason(service: Service, context: BrowserContext) -> None:
    cvm_id = _create(service, _name("refused"))
    other = _api(service, f"/cvms/{_create(service, _name('other'))}/agent_config").json()
    cvm = _attest(service, cvm_id, bound_to=other["client_cert"].encode())
    assert cvm["attestation_token"] == ""
    assert cvm["attestation_error"].startswith("report_data: expected ")

    page = context.new_page()
    problems = watch(page)
    _open_details(page, service, cvm_id)
    verdict = page.get_by_role("region", name="Attestation").locator(".verdict")
    expect(verdict).to_contain_text("Refused")
    expect(verdict).to_contain_text(cvm["attestation_error"])
    assert _fields(page) == {"Verified": "0", "Refused": "1", "Last verified": "never"}
    # The reason's hex values wrap inside the card, on a desk and on a phone.
    _fits(page, 1280)
    _fits(page, PHONE_WIDTH)
    assert problems == []
