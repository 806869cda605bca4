"""Attestation: pure verification cores for SEV-SNP and TDX evidence.

Nothing in ``snp/`` or ``tdx/`` (nor ``common``) does I/O: evidence, trusted
roots, certificates or fetchers, and the time are all passed in.
"""
