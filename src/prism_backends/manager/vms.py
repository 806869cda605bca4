"""What the manager knows of each VM, persisted as one JSON file per VM in its
own directory under ``DATA_DIR/vms`` (with its shares and console logs), so
that a restarted manager re-adopts the VMs that still run."""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

STATE_FILE = "vm.json"


@dataclass(frozen=True, slots=True)
class VmRecord:
    id: str
    client_cert_sha256: str
    client_cert_subject: str
    port: int
    vcpus: int
    memory_mib: int
    platform: str  # sev-snp, tdx, none
    confidential: bool
    created_at: str
    expires_at: str  # "" without a TTL
    argv: list[str]
    kernel_command_line: str
    firmware: str
    cpu_type: str
    image: str
    client_cert_authority_key_id: str = ""
    pid: int = 0
    pid_start: str = ""  # /proc/PID/stat start time: a reused PID is not ours
    state: str = "starting"  # starting, running, stopped
    policy_inputs: dict[str, Any] = field(default_factory=dict)

    def with_changes(self, **changes: Any) -> VmRecord:
        return replace(self, **changes)


class VmStore:
    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)

    def directory(self, vm_id: str) -> Path:
        return self.root / vm_id

    def save(self, record: VmRecord) -> None:
        directory = self.directory(record.id)
        directory.mkdir(parents=True, exist_ok=True)
        temporary = directory / f".{STATE_FILE}.tmp"
        temporary.write_text(json.dumps(asdict(record), indent=1, sort_keys=True))
        os.replace(temporary, directory / STATE_FILE)

    def load_all(self) -> list[VmRecord]:
        records = []
        for path in sorted(self.root.glob(f"*/{STATE_FILE}")):
            try:
                records.append(VmRecord(**json.loads(path.read_text())))
            except (OSError, ValueError, TypeError):
                continue  # a half-written directory of a create that never finished
        return records

    def orphans(self, known: set[str]) -> list[Path]:
        return [path for path in self.root.iterdir() if path.is_dir() and path.name not in known]

    def remove(self, vm_id: str) -> None:
        shutil.rmtree(self.directory(vm_id), ignore_errors=True)
