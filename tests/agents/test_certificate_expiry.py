"""The housekeeping's warning before an agent certificate runs out: one event
per certificate, whichever process (and however often) gets there."""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from cryptography import x509

from prism_backends.config import Settings
from prism_backends.runtime import Runtime
from prism_backends.statistics.sampler import Sampler
from tests.agents.conftest import DOMAIN, Api

RFC3339 = "%Y-%m-%dT%H:%M:%SZ"


def _not_after(api: Api, cvm_id: str) -> tuple[str, datetime]:
    certificate = x509.load_pem_x509_certificate(api.credential(cvm_id).client_cert)
    return format(certificate.serial_number, "x"), certificate.not_valid_after_utc


def _warnings(api: Api, cvm_id: str) -> list[dict[str, Any]]:
    return [event for event in api.events(cvm_id) if event["kind"] == "certificate"]


def test_a_certificate_about_to_expire_is_warned_about_once(runtime: Runtime, api: Api) -> None:
    cvm_id = api.create("expiring")
    serial, not_after = _not_after(api, cvm_id)
    # The housekeeping as it will run 10 days before the certificate runs out.
    then = not_after - timedelta(days=10)

    sampler = Sampler(runtime.settings, runtime.sessions)
    assert sampler.warn_expiring_certificates(not_after - timedelta(days=15)) == 0
    assert sampler.run_once(then) in (True, False)  # its first round does the housekeeping
    # Again, and from other processes (a restart, another replica): nothing more.
    assert sampler.warn_expiring_certificates(then + timedelta(hours=1)) == 0
    assert Sampler(runtime.settings, runtime.sessions).run_once(then + timedelta(days=1)) in (
        True,
        False,
    )

    (warning,) = _warnings(api, cvm_id)
    assert warning["level"] == "warn"
    assert serial in warning["message"]
    assert not_after.strftime(RFC3339) in warning["message"]
    assert warning["details"] == {"serial": serial, "not_after": not_after.strftime(RFC3339)}

    # A renewal is a new certificate: warned about in its own time.
    renewed = api.client.post(
        f"/backends/{DOMAIN}/cvms/{cvm_id}/certificates/{serial}/renew", headers=api.headers
    )
    assert renewed.status_code == 201, renewed.text
    renewed_after = datetime.strptime(renewed.json()["not_after"], RFC3339)
    later = renewed_after.replace(tzinfo=not_after.tzinfo) - timedelta(days=3)
    assert sampler.warn_expiring_certificates(later) == 1
    assert [w["details"]["serial"] for w in _warnings(api, cvm_id)] == [
        renewed.json()["serial"],
        serial,
    ]


def test_only_the_newest_valid_certificate_of_a_live_cvm_is_warned_about(
    runtime: Runtime, api: Api
) -> None:
    renewed_cvm, deleted_cvm = api.create("renewed"), api.create("deleted")
    serial, not_after = _not_after(api, renewed_cvm)
    issued = api.client.post(
        f"/backends/{DOMAIN}/cvms/{renewed_cvm}/certificates", headers=api.headers
    )
    assert issued.status_code == 201, issued.text
    api.delete(deleted_cvm)

    sampler = Sampler(runtime.settings, runtime.sessions)
    # Both of renewed_cvm's run out within the window: the agent is handed the
    # newer one, so that is the one to renew.
    assert sampler.warn_expiring_certificates(not_after - timedelta(days=1)) == 1
    (warning,) = _warnings(api, renewed_cvm)
    assert warning["details"]["serial"] == issued.json()["serial"] != serial
    # Revoking the newer one makes the older the newest valid one: its turn.
    revoked = api.client.post(
        f"/backends/{DOMAIN}/cvms/{renewed_cvm}/certificates/{issued.json()['serial']}/revoke",
        headers=api.headers,
    )
    assert revoked.status_code == 200, revoked.text
    assert sampler.warn_expiring_certificates(not_after - timedelta(hours=1)) == 1
    assert _warnings(api, renewed_cvm)[0]["details"]["serial"] == serial


def test_zero_days_turns_the_warning_off(
    runtime: Runtime, api: Api, make_settings: Callable[..., Settings]
) -> None:
    cvm_id = api.create("quiet")
    _, not_after = _not_after(api, cvm_id)
    quiet = Sampler(make_settings(certificate_warn_days=0), runtime.sessions)
    assert quiet.warn_expiring_certificates(not_after - timedelta(days=1)) == 0
    assert _warnings(api, cvm_id) == []


def test_concurrent_housekeepers_write_one_warning_each(runtime: Runtime, api: Api) -> None:
    cvm_ids = [api.create(f"racing-{number}") for number in range(5)]
    _, not_after = _not_after(api, cvm_ids[0])
    then = not_after - timedelta(days=1)
    samplers = [Sampler(runtime.settings, runtime.sessions) for _ in range(4)]
    start = threading.Barrier(len(samplers))
    counts: list[int] = []

    def housekeep(sampler: Sampler) -> None:
        start.wait()
        counts.append(sampler.warn_expiring_certificates(then))

    threads = [threading.Thread(target=housekeep, args=(s,)) for s in samplers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert sum(counts) == len(cvm_ids)
    assert all(len(_warnings(api, cvm_id)) == 1 for cvm_id in cvm_ids)
