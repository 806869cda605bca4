"""Intel TDX quote verification: a pure core.

- :mod:`.abi` parses quotes v4 and v5;
- :mod:`.verify` checks signatures, the PCK chain and optional Intel
  collateral (:mod:`.pcs`, :mod:`.pck`);
- :mod:`.policy` parses go-tdx-guest ``checkconfig.Config`` JSON and
  :mod:`.validate` checks a quote against its policy;
- :mod:`.roots` reads the bundled Intel root (the only file access).
"""
