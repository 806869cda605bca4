"""Intel TDX quote verification: a pure core.

- :mod:`.abi` parses quotes v4 and v5;
- :mod:`.verify` checks a quote's signatures and its PCK chain (:mod:`.pck`),
  and optional Intel collateral through :mod:`.collateral` (fetched and parsed
  by :mod:`.pcs`); :mod:`.chain` holds the certificate chain and signature
  checks both use;
- :mod:`.policy` parses go-tdx-guest ``checkconfig.Config`` JSON and
  :mod:`.validate` checks a quote against its policy;
- :mod:`.roots` reads the bundled Intel root (the only file access).
"""
