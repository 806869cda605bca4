"""The manager's small pieces: durations, identities, addresses, archives, CoRIM."""

from __future__ import annotations

import gzip
import io
from datetime import timedelta
from pathlib import Path

import pytest

from prism_backends.agents.pki import create_ca
from prism_backends.manager import corim, cpio
from prism_backends.manager.service import (
    CreateRequest,
    ManagerError,
    check_request,
    client_identity,
    guest_server_url,
    parse_go_duration,
)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("", 0), ("0", 0), ("90s", 90), ("30m", 1800), ("1h30m", 5400), ("1.5h", 5400),
     ("250ms", 0.25), ("2h0m0s", 7200)],
)  # fmt: skip
def test_go_durations(text: str, seconds: float) -> None:
    assert parse_go_duration(text) == timedelta(seconds=seconds)


@pytest.mark.parametrize("text", ["1d", "h", "10", "5m junk", "-1s"])
def test_bad_durations_are_refused_by_name(text: str) -> None:
    with pytest.raises(ManagerError, match="ttl"):
        parse_go_duration(text)


def test_client_identity_names_the_cvm_and_its_ca() -> None:
    ca = create_ca()
    issued = ca.issue_client("cvm-7", "domain", timedelta(days=1))
    identity = client_identity(issued.cert_pem)
    assert identity.subject == "cvm-7"
    assert len(identity.sha256) == 64
    other = create_ca().issue_client("cvm-7", "domain", timedelta(days=1))
    assert client_identity(other.cert_pem).authority_key_id != identity.authority_key_id
    with pytest.raises(ManagerError, match="agent_cvm_client_cert"):
        client_identity(b"not a certificate")


def test_loopback_agent_endpoints_are_rewritten_for_the_guest() -> None:
    assert guest_server_url("localhost:7018") == "10.0.2.2:7018"
    assert guest_server_url("127.0.0.1:7018") == "10.0.2.2:7018"
    assert guest_server_url("prism.example.com:7018") == "prism.example.com:7018"


def _unpack(data: bytes) -> dict[str, tuple[int, bytes]]:
    """A small newc reader: name -> (mode, contents)."""
    entries: dict[str, tuple[int, bytes]] = {}
    offset = 0
    while True:
        header = data[offset : offset + 110]
        assert header[:6] == b"070701"
        fields = [int(header[6 + 8 * i : 14 + 8 * i], 16) for i in range(13)]
        mode, size, name_size = fields[1], fields[6], fields[11]
        name_start = offset + 110
        name = data[name_start : name_start + name_size - 1].decode()
        body = name_start + name_size
        body += -body % 4
        contents = data[body : body + size]
        offset = body + size
        offset += -offset % 4
        if name == cpio.TRAILER:
            return entries
        entries[name] = (mode, contents)


def test_cpio_archives_are_reproducible_and_complete(tmp_path: Path) -> None:
    def tree(root: Path) -> bytes:
        (root / "bin").mkdir(parents=True)
        (root / "bin" / "busybox").write_bytes(b"\x7fELF")
        (root / "bin" / "busybox").chmod(0o755)
        (root / "bin" / "sh").symlink_to("busybox")
        (root / "init").write_text("#!/bin/sh\n")
        out = io.BytesIO()
        with gzip.GzipFile(fileobj=out, mode="wb", mtime=0) as packed:
            cpio.write_tree(root, packed)
        return out.getvalue()

    first, second = tree(tmp_path / "a"), tree(tmp_path / "b")
    assert first == second
    entries = _unpack(gzip.decompress(first))
    assert set(entries) == {"bin", "bin/busybox", "bin/sh", "init"}
    assert entries["bin/busybox"] == (0o100755, b"\x7fELF")
    assert entries["bin/sh"] == (0o120777, b"busybox")
    assert entries["init"][0] == 0o100644


def test_corim_carries_the_reference_values_deterministically() -> None:
    measurement = bytes(range(48))
    encoded = corim.snp_reference_corim(
        measurement=measurement, guest_policy=0x30000, host_data=b"\x01" * 32
    )
    assert encoded == corim.snp_reference_corim(
        measurement=measurement, guest_policy=0x30000, host_data=b"\x01" * 32
    )
    assert encoded[:3] == b"\xd9\x01\xf5"  # CBOR tag 501: an unsigned CoRIM
    assert corim.snp_reference_values(encoded) == {
        "launch_measurement": measurement,
        "guest_policy": 0x30000,
        "host_data": b"\x01" * 32,
    }


def _request(**changes: object) -> CreateRequest:
    ca = create_ca()
    issued = ca.issue_client("cvm-1", "dom", timedelta(days=1))
    values: dict[str, object] = {
        "log_level": "info",
        "server_ca_cert": ca.cert_pem,
        "client_key": issued.key_pem,
        "client_cert": issued.cert_pem,
        "server_url": "localhost:7018",
        "ca_url": "",
        "ttl": "",
        **changes,
    }
    return CreateRequest(**values)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"log_level": "loud"}, "agent_log_level"),
        ({"server_url": ""}, "agent_cvm_server_url"),
        ({"server_url": "no-port"}, "agent_cvm_server_url"),
        ({"server_ca_cert": b""}, "agent_cvm_server_ca_cert"),
        ({"client_key": b"secret"}, "agent_cvm_client_key"),
        ({"ca_url": "ftp://x"}, "agent_cvm_ca_url"),
        ({"platform": "sev"}, "x-prism-platform"),
    ],
)
def test_every_create_field_is_checked_by_name(changes: dict[str, object], field: str) -> None:
    with pytest.raises(ManagerError, match=field) as refused:
        check_request(_request(**changes))
    assert refused.value.kind == "invalid"
    check_request(_request())  # the unchanged request passes


def test_manager_paths_are_made_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from prism_backends.manager.settings import load_manager_settings

    monkeypatch.chdir(tmp_path)
    settings = load_manager_settings(None, data_dir=Path("relative/manager"))
    assert settings.data_dir == tmp_path / "relative" / "manager"
    assert settings.effective_images_dir == tmp_path / "relative" / "manager" / "images"
