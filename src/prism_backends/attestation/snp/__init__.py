"""AMD SEV-SNP attestation: report ABI, VCEK/VLEK chain verification, policy validation.

Pure: every input (evidence, trusted roots, certificates, a fetcher, the time) is
passed in. The one module that reads anything is :mod:`.roots`, which loads AMD's
published root certificates shipped as package data.

- :mod:`.abi`: parse the 0x4A0-byte ATTESTATION_REPORT (versions 2 to 5) and the
  GUID-keyed certificate table a host may append to it.
- :mod:`.kds`: AMD Key Distribution Service facts: VCEK/VLEK X.509 extensions,
  product lines, the VCEK URL.
- :mod:`.trust`: the per-product root set (ARK, ASK, ASVK) and certificate loading.
- :mod:`.verify`: signature and certificate-chain verification.
- :mod:`.policy` and :mod:`.validate`: go-sev-guest ``check.Config`` policies and
  the checks they ask for.
"""
