"""The real Milan sample (go-sev-guest test vectors) and a time inside its validity."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

TESTDATA = Path(__file__).parent / "testdata"
REPORT = (TESTDATA / "milan-vcek-report.bin").read_bytes()
VCEK = (TESTDATA / "milan-vcek.der").read_bytes()
# The VCEK is valid 2022-09-24 to 2029-09-24; AMD's Milan ARK and ASK 2020 to 2045.
NOW = datetime(2025, 1, 1, tzinfo=UTC)
CHIP_ID = bytes.fromhex(
    "3ac3fe21e13fb0990eb28a802e3fb6a29483a6b0753590c951bdd3b8e5378618"
    "4ca39e359669a2b76a1936776b564ea464cdce40c05f63c9b610c5068b006b5d"
)
MEASUREMENT = (
    "b07af9620f3b839b47996422ddec6058338951d984e31211"
    "5131ea82705eaf5b6bdf8a9ece31a5a608eb0cf2e4872b01"
)
KDS_URL = (
    "https://kdsintf.amd.com/vcek/v1/Milan/"
    + CHIP_ID.hex()
    + "?blSPL=2&teeSPL=0&snpSPL=5&ucodeSPL=68"
)
