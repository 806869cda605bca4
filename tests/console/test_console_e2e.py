"""The console in a real browser against a real ``serve`` (SQLite, and
PostgreSQL when PRISM_BACKENDS_TEST_POSTGRES_URL is set), with a real
reference agent: what a person does with it, from signing in to deleting."""

from __future__ import annotations

import json
import os
import pty
import re
import subprocess
import sys
import uuid
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import expect

from tests.client.service import POLICY, Service, service
from tests.console.browser import BrowserContext, Page, sign_in, watch
from tests.console.test_signin import _drain, _wait_for
from tests.served import DIAL_TIMEOUT, DOMAIN, START_TIMEOUT, free_port

pytestmark = pytest.mark.slow
__all__ = ["service"]

TOKEN_KEY = "prism-backends.token"
LIVE_TIMEOUT_MS = (START_TIMEOUT + DIAL_TIMEOUT) * 1000


def _console(service: Service) -> str:
    return f"{service.url}/ui/"


def _name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def _api(service: Service, path: str) -> httpx.Response:
    response = httpx.get(
        f"{service.url}/{DOMAIN}{path}", headers={"Authorization": f"Bearer {service.token}"}
    )
    response.raise_for_status()
    return response


def _create(service: Service, name: str) -> str:
    response = httpx.post(
        f"{service.url}/{DOMAIN}/cvms/external/2/sev-snp",
        headers={"Authorization": f"Bearer {service.token}"},
        json={"name": name},
    )
    assert response.status_code == 201, response.text
    cvm_id: str = response.json()["id"]
    return cvm_id


# How much of a select's content box its drop-down arrow takes (Chromium's, with room to spare).
SELECT_ARROW_PX = 24
# The uptime chart's span when its samples are a second apart.
SPAN_OF_SECONDS = re.compile(r"^(1 sample|\d+ (s|min) of samples)$")
# A pill around its words: its padding, its dot and the gap after it (about 33 px).
PILL_CHROME_PX = 40


def _select_shows_its_choice_whole(page: Page, label: str) -> None:
    shown = page.get_by_label(label).evaluate(
        """(select) => {
          const style = getComputedStyle(select);
          const pen = document.createElement("canvas").getContext("2d");
          pen.font = style.font;
          const text = select.options[select.selectedIndex].text;
          const room = select.clientWidth - parseFloat(style.paddingLeft)
            - parseFloat(style.paddingRight);
          return { text, width: pen.measureText(text).width, room };
        }"""
    )
    assert shown["width"] + SELECT_ARROW_PX <= shown["room"], f"{label}: {shown} is cut"


def _pills_fit_their_words(page: Page) -> None:
    sizes = page.evaluate(
        """() => [...document.querySelectorAll(".pill")].map((pill) => {
          const words = document.createRange();
          words.selectNodeContents(pill);
          return [pill.textContent, pill.getBoundingClientRect().width,
                  words.getBoundingClientRect().width];
        })"""
    )
    assert sizes
    for text, width, words in sizes:
        assert width <= words + PILL_CHROME_PX, f"the {text!r} pill is {width} px wide"


def _refused_token(token: str) -> str:
    """The same claims (so the console cannot tell) with a signature that fails."""
    head, claims, signature = token.split(".")
    flipped = "A" if signature[5] != "A" else "B"
    return f"{head}.{claims}.{signature[:5]}{flipped}{signature[6:]}"


def test_signing_in_with_a_token_a_refused_token_and_signing_out(
    service: Service, context: BrowserContext
) -> None:
    page = context.new_page()
    problems = watch(page)
    page.goto(_console(service))
    expect(page.get_by_role("heading", name="Sign in to the console")).to_be_visible()
    token_field = page.get_by_label("Access token")
    sign_in_button = page.get_by_role("button", name="Sign in")

    token_field.fill("not-a-token")
    sign_in_button.click()
    expect(page.locator("#access-token-error")).to_contain_text("not a token")
    expect(token_field).to_have_attribute("aria-invalid", "true")
    token_field.fill(_refused_token(service.token))
    sign_in_button.click()
    expect(page.locator("#access-token-error")).to_contain_text("refused")

    token_field.fill(service.token)
    sign_in_button.click()
    expect(page.get_by_role("heading", name="Dashboard", level=1)).to_be_visible()
    expect(page.locator(".domain")).to_have_text(DOMAIN)
    expect(page.get_by_role("status")).to_contain_text(f"Signed in to {DOMAIN}")
    # The token lives in this tab's sessionStorage and nowhere else.
    assert page.evaluate(f"sessionStorage.getItem('{TOKEN_KEY}')") == service.token
    assert page.evaluate("localStorage.length") == 0
    assert context.cookies() == []

    # A 401 from any call ends the session with a message.
    page.evaluate(
        "([key, token]) => sessionStorage.setItem(key, token)",
        [TOKEN_KEY, _refused_token(service.token)],
    )
    page.goto(f"{_console(service)}#/cvms")
    expect(page.get_by_role("heading", name="Sign in to the console")).to_be_visible()
    expect(page.get_by_role("alert")).to_contain_text("refused the access token")
    assert page.evaluate(f"sessionStorage.getItem('{TOKEN_KEY}')") is None

    sign_in(page, _console(service), service.token)
    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_role("heading", name="Sign in to the console")).to_be_visible()
    assert page.evaluate(f"sessionStorage.getItem('{TOKEN_KEY}')") is None
    page.goto(f"{_console(service)}#/cvms")
    expect(page.get_by_label("Access token")).to_be_visible()
    assert problems == []


def test_a_cvm_from_the_form_to_its_deletion(service: Service, context: BrowserContext) -> None:
    name = _name("console")
    page = context.new_page()
    problems = watch(page)
    sign_in(page, _console(service), service.token)

    # The form offers what the catalog enables, priced before anything is created.
    offerings = _api(service, "/offerings").json()
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Create").click()
    provider = page.get_by_label("Provider")
    expect(provider).to_have_value(offerings["providers"][0]["name"])
    offered = [option.get_attribute("value") for option in provider.locator("option").all()]
    assert offered == [entry["name"] for entry in offerings["providers"]]
    external = next(entry for entry in offerings["providers"] if entry["name"] == "external")
    page.get_by_label("Provider").select_option("external")
    _select_shows_its_choice_whole(page, "Provider")
    platforms = page.get_by_label("Platform").locator("option")
    expect(platforms).to_have_count(len(external["platforms"]))
    page.get_by_label("Platform").select_option("sev-snp")
    snp = next(p for p in external["platforms"] if p["cc_platform"] == "sev-snp")
    expect(page.get_by_label("vCPUs").locator("option")).to_have_count(len(snp["vcpus"]))
    page.get_by_label("vCPUs").select_option("2")
    two = next(v for v in snp["vcpus"] if v["vcpus"] == 2)
    expect(page.locator("#create-cost")).to_have_text(two["monthly_cost_estimate"])
    page.get_by_label("Name", exact=True).fill(name)
    page.get_by_label("Agent log level").select_option("debug")
    page.get_by_role("button", name="Create CVM").click()

    expect(page.get_by_role("heading", name=name, level=1)).to_be_visible()
    cvm_id = page.url.rsplit("/", 1)[-1]
    overview = page.locator("dl.facts")
    expect(overview).to_contain_text("debug")
    expect(overview).to_contain_text(cvm_id)

    # The service's refusal is shown at the field it names.
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Create").click()
    page.get_by_label("Name", exact=True).fill(name)
    page.get_by_role("button", name="Create CVM").click()
    expect(page.locator("#create-name-error")).to_contain_text("already exists")
    expect(page.get_by_role("alert")).to_contain_text("Name:")
    expect(page.get_by_label("Name", exact=True)).to_be_focused()

    # The list finds it by name and by id; the status filter leaves it out.
    page.get_by_role("navigation", name="Main").get_by_role("link", name="CVMs").click()
    search = page.get_by_label("Search by name or id")
    search.fill(name)
    row_link = page.get_by_role("link", name=name, exact=True)
    expect(row_link).to_be_visible()
    page.get_by_label("Status").select_option("inactive")
    expect(page.get_by_text("No CVM matches these filters.")).to_be_visible()
    page.get_by_label("Status").select_option("")
    search.fill(cvm_id)
    expect(row_link).to_be_visible()
    row_link.click()
    expect(page.get_by_role("heading", name=name, level=1)).to_be_visible()

    # Its agent connects: the events arrive on the open page, and the status follows.
    config = _api(service, f"/cvms/{cvm_id}/agent_config").json()
    service.start_agent("agent-console", config)
    events = page.get_by_role("log", name="Agent events, newest first")
    expect(events.locator('li[data-kind="connected"]')).to_be_visible(timeout=LIVE_TIMEOUT_MS)
    expect(events.locator('li[data-kind="state"]')).to_contain_text("ready")
    expect(overview.locator(".pill").first).to_have_text("running")
    expect(overview).to_contain_text("ready")

    with page.expect_download() as policy_download:
        page.get_by_role("button", name="Download policy").click()
    policy = policy_download.value
    assert policy.suggested_filename == f"{name}-attestation-policy.json"
    assert json.loads(Path(policy.path()).read_bytes()) == json.loads(POLICY)
    with page.expect_download() as config_download:
        page.get_by_role("button", name="Download agent config").click()
    saved = json.loads(Path(config_download.value.path()).read_bytes())
    assert saved["cvm_id"] == cvm_id and "PRIVATE KEY" in saved["client_key"]

    # Certificates: issue one, renew the active one, revoke one (confirmed).
    certificates = page.get_by_role("table", name="Agent certificates").locator("tbody tr")
    expect(certificates).to_have_count(1)
    expect(certificates.first.locator(".pill")).to_have_text("active")
    page.get_by_role("button", name="Issue certificate").click()
    expect(certificates).to_have_count(2)
    expect(certificates.first.locator(".pill")).to_have_text("pending")
    active = certificates.filter(has=page.locator(".pill", has_text="active"))
    active.get_by_role("button", name="Renew").click()
    expect(certificates).to_have_count(3)
    expect(page.get_by_role("status")).to_contain_text("Renewed")
    expect(certificates.first).to_contain_text("expires in")
    newest = certificates.first
    serial = newest.get_attribute("data-serial")
    newest.get_by_role("button", name="Revoke").click()
    dialog = page.get_by_role("dialog")
    expect(dialog).to_contain_text(str(serial))
    dialog.get_by_role("button", name="Revoke").click()
    expect(page.locator(f'tr[data-serial="{serial}"] .pill')).to_have_text("revoked")
    states = {
        c["serial"]: c["state"]
        for c in _api(service, f"/cvms/{cvm_id}/certificates").json()["certificates"]
    }
    assert states[str(serial)] == "revoked"

    # The dashboard counts it online and charts its uptime.
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Dashboard").click()
    online = page.locator('[data-tile="online"] .tile-value')
    expect(online).not_to_have_text("0")
    card = page.locator(".chart-card", has=page.get_by_role("link", name=name, exact=True))
    expect(card.locator("svg.chart")).to_be_visible()
    # Samples a second apart here: the axis says how long they cover, not a day.
    expect(card.locator(".chart-span")).to_have_text(SPAN_OF_SECONDS)
    card.get_by_role("link", name=name, exact=True).click()

    # Delete asks first; Escape or Cancel keeps the CVM.
    page.get_by_role("button", name="Delete", exact=True).click()
    expect(dialog).to_be_visible()
    expect(dialog).to_contain_text(f"Delete {name}?")
    expect(dialog.get_by_role("button", name="Cancel")).to_be_focused()
    page.keyboard.press("Escape")
    expect(dialog).to_be_hidden()
    page.get_by_role("button", name="Delete", exact=True).click()
    dialog.get_by_role("button", name="Delete CVM").click()
    expect(page.get_by_role("heading", name="CVMs", level=1)).to_be_visible()
    expect(page.get_by_role("status")).to_contain_text(f"Deleted {name}")
    page.get_by_label("Search by name or id").fill(name)
    expect(page.get_by_text("No CVM matches these filters.")).to_be_visible()
    assert service.processes.exit_code("agent-console") == 0  # told to go
    assert problems == []


def test_the_pages_fit_a_phone(service: Service, context: BrowserContext) -> None:
    cvm_id = _create(service, _name("phone"))
    page = context.new_page()
    page.set_viewport_size({"width": 375, "height": 800})
    problems = watch(page)
    sign_in(page, _console(service), service.token)
    for route, heading in [
        ("#/", "Dashboard"),
        ("#/cvms", "CVMs"),
        ("#/create", "Create a CVM"),
        (f"#/cvms/{cvm_id}", None),
    ]:
        page.goto(f"{_console(service)}{route}")
        if heading:
            expect(page.get_by_role("heading", name=heading, level=1)).to_be_visible()
        else:
            expect(page.get_by_role("table", name="Agent certificates")).to_be_visible()
        width = page.evaluate("document.documentElement.scrollWidth")
        assert width <= 375, f"{route} scrolls sideways ({width} px)"
        if route != "#/create":
            expect(page.locator(".pill").first).to_be_visible()
            _pills_fit_their_words(page)
    # Keyboard: a page opens with the focus on its heading; Tab goes on to its actions.
    expect(page.get_by_role("heading", level=1)).to_be_focused()
    page.keyboard.press("Tab")
    expect(page.get_by_role("button", name="Download policy")).to_be_focused()
    assert problems == []


def _serve_on_a_terminal(tmp_path: Path) -> tuple[subprocess.Popen[bytes], int, int, Path]:
    port, agents_port = free_port(), free_port()
    primary, replica = pty.openpty()
    log_path = tmp_path / "serve.log"
    data = tmp_path / "data"
    where = ["--port", str(port), "--agents-port", str(agents_port), "--data-dir", str(data)]
    with log_path.open("wb") as log_file:
        serve = subprocess.Popen(
            [sys.executable, "-m", "prism_backends", "serve", *where],
            stdout=replica,
            stderr=log_file,
            env={k: v for k, v in os.environ.items() if not k.startswith("PRISM_BACKENDS_")}
            | {"NO_COLOR": "1"},
        )
    os.close(replica)
    return serve, primary, port, log_path


def test_the_link_serve_prints_signs_the_browser_in(
    tmp_path: Path, context: BrowserContext
) -> None:
    serve, primary, _, log_path = _serve_on_a_terminal(tmp_path)
    try:
        _wait_for(lambda: b"HTTP API on" in log_path.read_bytes(), serve)
        printed = _drain(primary, wait=1.0)
        link = re.search(rb"http://127\.0\.0\.1:\d+/backends/ui/#code=[A-Za-z0-9_-]+", printed)
        assert link, printed
        page: Page = context.new_page()
        problems = watch(page)
        page.goto(link.group().decode())
        expect(page.get_by_role("heading", name="Dashboard", level=1)).to_be_visible()
        assert "code=" not in page.url  # out of the address bar and the history
        assert page.evaluate(f"sessionStorage.getItem('{TOKEN_KEY}')")
        # The code is spent: the same link again signs nobody in.
        second = context.new_page()
        second.goto(link.group().decode())
        expect(second.get_by_role("alert")).to_contain_text("sign-in link did not work")
        expect(second.get_by_label("Access token")).to_be_visible()
        assert problems == []
    finally:
        serve.terminate()
        serve.wait(timeout=30)
        os.close(primary)
