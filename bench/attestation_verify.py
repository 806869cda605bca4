"""Verifications per second of attestation evidence, in process, on one core.

Usage::

    uv run python -m bench.attestation_verify [--seconds 10] [--warmup 1] [--output FILE]

Each case calls :func:`prism_backends.attestation.appraisal.appraise` (what the
agents endpoint runs for every piece of evidence) on a real vendor sample from
``tests/attestation/*/testdata``, with AMD's and Intel's bundled roots, at a time
inside the sample's validity:

``snp vcek given``
    the Milan SEV-SNP report, its VCEK passed in (as when it is cached): parse,
    ARK -> ASK -> VCEK chain (RSA-PSS 4096/SHA-384), report signature (ECDSA P-384);
``snp certificate table``
    the same report followed by a certificate table carrying VCEK, ASK and ARK
    (as an extended report carries them): the same work, plus parsing the table
    and comparing its ARK with the bundled one;
``tdx v4``
    Intel's v4 quote without collateral: the PCK chain (cryptography's path
    validation), the quote and QE report signatures (ECDSA P-256);
``tdx v4 collateral``
    the same quote with Intel's real collateral (TCB info, QE identity, PCK and
    root CRLs) served from memory by a fetcher, as a warm cache would: the above,
    plus the CRLs, the TCB signing chain, both signed JSON bodies and the TCB
    level matching.

Two anchors run beside them: ``anchor: 1 P-384 verify`` and ``anchor: 2 P-256
verifies``, the evidence's signature checks alone through cryptography (fresh keys,
a message of the evidence's size), and at the end ``openssl speed ecdsap256
ecdsap384`` (when the command exists); each platform's verifications per
CPU-second are printed against both, from the same run.

For each case: ``--warmup`` seconds unmeasured, then ``--seconds`` seconds of
back-to-back calls, each timed (``perf_counter_ns``). Verifications per second is
calls divided by the measured wall time; latencies are nearest-rank
percentiles. CPU milliseconds per call (this thread's CPU clock over the
measured calls) and verifications per CPU second are also given: on a busy
machine the wall-clock figures include time spent waiting for the CPU, these
do not. The 1-minute load average before and after is recorded. The process
is pinned to one CPU where the OS allows it; nothing is threaded. Results are
printed and written to ``bench/results/attestation_verify.json``. It asserts
nothing about speed; a case whose evidence does not verify is reported as such
(its figures then time a refusal).
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import platform
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import cryptography
from cryptography import x509
from cryptography.hazmat.backends.openssl.backend import backend as openssl_backend
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding

from prism_backends.attestation.appraisal import Anchors, Verdict, appraise
from prism_backends.attestation.common import CollateralUnavailable
from prism_backends.attestation.snp import abi as snp_abi
from prism_backends.attestation.snp.roots import bundled_roots as snp_roots
from prism_backends.attestation.tdx import pcs
from prism_backends.attestation.tdx.roots import bundled_roots as tdx_roots

REPO = Path(__file__).resolve().parent.parent
SNP_TESTDATA = REPO / "tests" / "attestation" / "snp" / "testdata"
TDX_TESTDATA = REPO / "tests" / "attestation" / "tdx" / "testdata"
DEFAULT_RESULTS = Path(__file__).resolve().parent / "results" / "attestation_verify.json"

SNP_NOW = datetime(2025, 1, 1, tzinfo=UTC)  # inside the Milan VCEK's validity
TDX_V4_NOW = datetime(2023, 7, 1, 1, 0, tzinfo=UTC)  # go-tdx-guest's clock for the v4 sample
V4_FMSPC = bytes.fromhex("50806f000000")


class MemoryPcs:
    """Intel PCS answered from memory: the v4 sample's real collateral, by URL."""

    def __init__(self, responses: Mapping[str, tuple[Mapping[str, str], bytes]]) -> None:
        self._responses = dict(responses)

    def get_with_headers(self, url: str) -> tuple[Mapping[str, str], bytes]:
        try:
            return self._responses[url]
        except KeyError:
            raise CollateralUnavailable(f"the benchmark has no response for {url}") from None

    def get(self, url: str) -> bytes:
        return self.get_with_headers(url)[1]


def _root_crl_url(root: x509.Certificate) -> str:
    try:
        points = root.extensions.get_extension_for_class(x509.CRLDistributionPoints).value
    except x509.ExtensionNotFound:
        return pcs.ROOT_CRL_URL
    for point in points:
        for name in point.full_name or ():
            if isinstance(name, x509.UniformResourceIdentifier):
                return name.value
    return pcs.ROOT_CRL_URL


def v4_collateral_pcs(root: x509.Certificate) -> MemoryPcs:
    collateral = TDX_TESTDATA / "collateral"
    chain = (collateral / "tcb-signing-issuer-chain.txt").read_bytes().strip().decode()
    return MemoryPcs(
        {
            pcs.tcb_info_url(V4_FMSPC): (
                {"TCB-Info-Issuer-Chain": chain},
                (collateral / "sample_tcbInfo_response").read_bytes(),
            ),
            pcs.qe_identity_url(): (
                {"SGX-Enclave-Identity-Issuer-Chain": chain},
                (collateral / "sample_qeIdentity_response").read_bytes(),
            ),
            pcs.pck_crl_url("platform"): ({}, (collateral / "pckcrl").read_bytes()),
            _root_crl_url(root): ({}, (collateral / "rootcrl.der").read_bytes()),
        }
    )


@dataclass(frozen=True)
class Case:
    name: str
    description: str
    call: Callable[[], Verdict]


@dataclass(frozen=True)
class Result:
    case: str
    description: str
    verified: bool
    reason: str
    tcb_status: str | None  # TDX with collateral: Intel's TCB status (not judged)
    calls: int
    seconds: float
    verifications_per_second: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    min_ms: float
    mean_ms: float
    cpu_ms_per_call: float  # this thread's CPU time / calls: robust to other load
    verifications_per_cpu_second: float


def cases() -> list[Case]:
    anchors = Anchors(snp_roots=snp_roots(), tdx_roots=tdx_roots())
    report = (SNP_TESTDATA / "milan-vcek-report.bin").read_bytes()
    vcek = (SNP_TESTDATA / "milan-vcek.der").read_bytes()
    milan = anchors.snp_roots["Milan"]
    assert milan.ask is not None
    extended = report + snp_abi.encode_cert_table(
        [
            (snp_abi.VCEK_GUID, vcek),
            (snp_abi.ASK_GUID, milan.ask.public_bytes(Encoding.DER)),
            (snp_abi.ARK_GUID, milan.ark.public_bytes(Encoding.DER)),
        ]
    )
    quote = (TDX_TESTDATA / "spr-e4-quote-v4.dat").read_bytes()
    fetcher = v4_collateral_pcs(anchors.tdx_roots[0])
    return [
        Case(
            "snp vcek given",
            "SEV-SNP Milan report, VCEK passed in (cached)",
            lambda: appraise(report, anchors=anchors, now=SNP_NOW, endorsement=vcek),
        ),
        Case(
            "snp certificate table",
            "SEV-SNP Milan report + certificate table (VCEK, ASK, ARK)",
            lambda: appraise(extended, anchors=anchors, now=SNP_NOW),
        ),
        Case(
            "tdx v4",
            "TDX v4 quote, no collateral",
            lambda: appraise(quote, anchors=anchors, now=TDX_V4_NOW),
        ),
        Case(
            "tdx v4 collateral",
            "TDX v4 quote + Intel's real collateral (from memory)",
            lambda: appraise(quote, anchors=anchors, now=TDX_V4_NOW, fetcher=fetcher),
        ),
    ]


# --- Anchors: the signature checks alone --------------------------------------------


def _bare_verifies(
    curve: ec.EllipticCurve, digest: hashes.HashAlgorithm, count: int
) -> Callable[[], Verdict]:
    """What the evidence's signatures cost through cryptography alone: ``count``
    ECDSA verifies, on the curve and hash of the evidence and over as many bytes
    (a report signs 672; a TDX quote signs 632 and its QE report 384)."""
    key = ec.generate_private_key(curve)
    message = os.urandom(672)
    signature = key.sign(message, ec.ECDSA(digest))
    public = key.public_key()

    def verify() -> Verdict:
        for _ in range(count):
            public.verify(signature, message, ec.ECDSA(digest))
        return Verdict(platform="", verified=True)

    return verify


def anchor_cases() -> list[Case]:
    return [
        Case(
            "anchor: 1 P-384 verify",
            "one ECDSA P-384/SHA-384 verify through cryptography (what a SEV-SNP report needs)",
            _bare_verifies(ec.SECP384R1(), hashes.SHA384(), 1),
        ),
        Case(
            "anchor: 2 P-256 verifies",
            "two ECDSA P-256/SHA-256 verifies through cryptography (a TDX quote's two)",
            _bare_verifies(ec.SECP256R1(), hashes.SHA256(), 2),
        ),
    ]


def openssl_speed(seconds: int) -> dict[str, float] | None:
    """Verifies per second of ``openssl speed`` for P-256 and P-384, or None without
    an openssl command."""
    command = shutil.which("openssl")
    if command is None:
        return None
    done = subprocess.run(
        [command, "speed", "-seconds", str(seconds), "ecdsap256", "ecdsap384"],
        capture_output=True,
        text=True,
        timeout=seconds * 4 + 60,
        check=False,
    )
    found: dict[str, float] = {}
    for line in done.stdout.splitlines():
        match = re.match(r"\s*(256|384) bits ecdsa \(nistp\d+\)\s+\S+s\s+\S+s\s+\S+\s+(\S+)", line)
        if match:
            found[f"p{match.group(1)}"] = float(match.group(2))
    return found or None


def percentile(sorted_ns: Sequence[int], fraction: float) -> float:
    """Nearest-rank percentile, in milliseconds."""
    rank = max(1, math.ceil(fraction * len(sorted_ns)))
    return sorted_ns[rank - 1] / 1e6


def measure(case: Case, seconds: float, warmup: float) -> Result:
    verdict = case.call()
    deadline = time.perf_counter() + warmup
    while time.perf_counter() < deadline:
        case.call()
    gc.collect()
    latencies: list[int] = []
    clock = time.perf_counter_ns
    cpu_started = time.thread_time_ns()
    started = clock()
    stop = started + int(seconds * 1e9)
    while True:
        before = clock()
        case.call()
        after = clock()
        latencies.append(after - before)
        if after >= stop:
            break
    wall = (clock() - started) / 1e9
    cpu = (time.thread_time_ns() - cpu_started) / 1e9
    latencies.sort()
    return Result(
        case=case.name,
        description=case.description,
        verified=verdict.verified,
        reason=verdict.reason,
        tcb_status=verdict.evidence.tcb.get("tcb_status") if verdict.evidence else None,
        calls=len(latencies),
        seconds=round(wall, 3),
        verifications_per_second=round(len(latencies) / wall, 1),
        p50_ms=round(percentile(latencies, 0.50), 3),
        p90_ms=round(percentile(latencies, 0.90), 3),
        p99_ms=round(percentile(latencies, 0.99), 3),
        min_ms=round(latencies[0] / 1e6, 3),
        mean_ms=round(sum(latencies) / len(latencies) / 1e6, 3),
        cpu_ms_per_call=round(cpu * 1e3 / len(latencies), 3),
        verifications_per_cpu_second=round(len(latencies) / cpu, 1) if cpu else math.inf,
    )


def pin_to_one_cpu() -> int | None:
    """Pin this process to the CPU it runs on; the CPU, or None where not possible."""
    if not hasattr(os, "sched_setaffinity") or not hasattr(os, "sched_getaffinity"):
        return None
    allowed = sorted(os.sched_getaffinity(0))
    if not allowed:
        return None
    cpu = allowed[0]
    os.sched_setaffinity(0, {cpu})
    return cpu


def load_average() -> float | None:
    try:
        return round(os.getloadavg()[0], 2)
    except (AttributeError, OSError):
        return None


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def table(results: Sequence[Result]) -> str:
    header = (
        f"{'case':<24}{'verified':>9}{'calls':>8}{'verif/s':>10}{'p50 ms':>9}{'p99 ms':>9}"
        f"{'cpu ms':>9}{'verif/cpu-s':>13}"
    )
    lines = [header, "-" * len(header)]
    for r in results:
        lines.append(
            f"{r.case:<24}{'yes' if r.verified else 'NO':>9}{r.calls:>8}"
            f"{r.verifications_per_second:>10.1f}{r.p50_ms:>9.3f}{r.p99_ms:>9.3f}"
            f"{r.cpu_ms_per_call:>9.3f}{r.verifications_per_cpu_second:>13.1f}"
        )
    return "\n".join(lines)


def against_anchors(results: Sequence[Result], speed: dict[str, float] | None) -> list[str]:
    """Each platform's verifications per CPU-second against its signatures alone:
    in Python through cryptography, and in C by ``openssl speed`` (same run)."""
    rate = {r.case: r.verifications_per_cpu_second for r in results}
    lines = []
    for case, anchor, curve, count in (
        ("snp vcek given", "anchor: 1 P-384 verify", "p384", 1),
        ("tdx v4", "anchor: 2 P-256 verifies", "p256", 2),
    ):
        line = f"{case}: {rate[case] / rate[anchor]:.2f}x its verifies through cryptography"
        if speed and curve in speed:
            bound = speed[curve] / count
            line += f", {rate[case] / bound:.2f}x openssl speed ({bound:,.0f}/s for {count})"
        lines.append(line)
    return lines


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.attestation_verify",
        description="Verifications per second of SEV-SNP reports and TDX quotes (one core).",
    )
    parser.add_argument(
        "--seconds", type=float, default=10.0, help="measured seconds per case (default 10)"
    )
    parser.add_argument(
        "--warmup", type=float, default=1.0, help="unmeasured seconds per case (default 1)"
    )
    parser.add_argument("--output", type=Path, default=DEFAULT_RESULTS, help="JSON results file")
    parser.add_argument("--no-pin", action="store_true", help="do not pin the process to one CPU")
    args = parser.parse_args(argv)
    if args.seconds <= 0 or args.warmup < 0:
        parser.error("--seconds must be > 0 and --warmup >= 0")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    cpu = None if args.no_pin else pin_to_one_cpu()
    load_before = load_average()
    results: list[Result] = []
    for case in [*cases(), *anchor_cases()]:
        print(f"measuring {case.name} ({args.seconds:g} s) ...", file=sys.stderr, flush=True)
        result = measure(case, args.seconds, args.warmup)
        if not result.verified:
            print(f"  note: {case.name} does not verify: {result.reason}", file=sys.stderr)
        results.append(result)
    print(table(results))
    speed = openssl_speed(max(1, round(args.seconds / 2)))
    ratios = against_anchors(results, speed)
    for line in ratios:
        print(line)
    load_after = load_average()
    loads = [x for x in (load_before, load_after) if x is not None]
    busiest = max(loads) if loads else None
    if busiest is not None and busiest > 0.5 * (os.cpu_count() or 1):
        print(
            f"note: the machine was busy (1-minute load {busiest:.1f} on {os.cpu_count()} CPUs):"
            " wall-clock figures include waiting for the CPU; 'cpu ms' does not",
            file=sys.stderr,
        )
    document: dict[str, Any] = {
        "benchmark": "attestation_verify",
        "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "settings": {"seconds": args.seconds, "warmup": args.warmup, "pinned_cpu": cpu},
        "load_average_1min": {"before": load_before, "after": load_after},
        "machine": {
            "cpu": cpu_model(),
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "implementation": platform.python_implementation(),
            "cryptography": cryptography.__version__,
            "openssl": openssl_backend.openssl_version_text(),
            "platform": platform.platform(),
        },
        "results": [asdict(r) for r in results],
        "openssl_speed_verifies_per_second": speed,
        "against_anchors": ratios,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(document, indent=2) + "\n")
    print(f"written to {args.output}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
