// A CVM's attestation verdict and the fields of the report behind it, for the
// details page. The CVM's attestation token carries the claims of the latest
// evidence that verified (signed by the service; /.well-known/jwks.json checks
// it); attestation_error says why the latest evidence was refused.

import { fromBase64, jwtClaims } from "./api.js";
import { h } from "./dom.js";
import { platformLabel, timeNode } from "./format.js";

// What the verifiers name their claims (attestation/snp/verify.py,
// attestation/tdx/verify.py); a name not here is shown with its underscores as spaces.
const LABELS = {
  // SEV-SNP TCB
  product: "Product line",
  current_tcb: "Current TCB",
  reported_tcb: "Reported TCB",
  committed_tcb: "Committed TCB",
  launch_tcb: "Launch TCB",
  current_version: "Firmware (current)",
  committed_version: "Firmware (committed)",
  // SEV-SNP report
  version: "Report version",
  guest_svn: "Guest SVN",
  policy: "Guest policy",
  family_id: "Family ID",
  image_id: "Image ID",
  vmpl: "VMPL",
  platform_info: "Platform info",
  signing_key: "Signing key",
  author_key_en: "Author key used",
  mask_chip_key: "Chip key masked",
  host_data: "Host data",
  id_key_digest: "ID key digest",
  author_key_digest: "Author key digest",
  report_id: "Report ID",
  report_id_ma: "Migration agent report ID",
  chip_id: "Chip ID",
  cpuid_fam_id: "CPUID family",
  cpuid_mod_id: "CPUID model",
  cpuid_step: "CPUID stepping",
  product_name: "Product",
  crl: "Revocation (CRL)",
  // TDX
  tee_tcb_svn: "TEE TCB SVN",
  tee_tcb_svn2: "TEE TCB SVN 2",
  qe_isv_svn: "QE ISV SVN",
  tcb_status: "TCB status",
  platform_tcb_status: "Platform TCB status",
  qe_tcb_status: "QE TCB status",
  tdx_module_tcb_status: "TDX module TCB status",
  tcb_date: "TCB date",
  advisory_ids: "Advisories",
  tcb_evaluation_data_number: "TCB evaluation number",
  quote_version: "Quote version",
  tdx_version: "TDX version",
  qe_vendor_id: "QE vendor ID",
  mr_seam: "MRSEAM",
  mr_signer_seam: "MRSIGNERSEAM",
  seam_attributes: "SEAM attributes",
  td_attributes: "TD attributes",
  xfam: "XFAM",
  mr_td: "MRTD",
  mr_config_id: "MRCONFIGID",
  mr_owner: "MROWNER",
  mr_owner_config: "MROWNERCONFIG",
  mr_service_td: "MRSERVICETD",
  rtmr0: "RTMR0",
  rtmr1: "RTMR1",
  rtmr2: "RTMR2",
  rtmr3: "RTMR3",
  debug: "Debug",
  // vTPM, EAT
  vtpm: "vTPM",
  eat: "EAT",
};
// The parts of an SEV-SNP TCB version, as AMD's KDS names them.
const TCB_PARTS = { bl: "BL", tee: "TEE", snp: "SNP", microcode: "Microcode", fmc: "FMC" };
// Bit fields: their bits say more in hex than in decimal.
const HEX_FIELDS = new Set(["policy", "platform_info"]);

const labelOf = (name) => LABELS[name] || name.replaceAll("_", " ").replace(/^./, (first) => first.toUpperCase());

/** The verdict, the counts of evidence verified and refused, and the report's fields. */
export function attestationView(cvm, counts) {
  const claims = cvm.attestation_token ? jwtClaims(cvm.attestation_token) : null;
  const parts = [verdict(cvm, claims)];
  const rows = [];
  const row = (label, value, { mono = false } = {}) => {
    if (value === undefined || value === null || value === "") return;
    rows.push(h("dt", {}, label), h("dd", {}, mono ? h("code", {}, value) : value));
  };
  if (counts) {
    row("Verified", String(counts.verified));
    row("Refused", String(counts.failed));
    row("Last verified", timeNode(counts.last_verified_at, { relativeToo: true }));
  }
  if (cvm.attestation) row("Evidence", `${fromBase64(cvm.attestation).length} bytes`);
  if (claims) {
    row("Platform", platformLabel(claims.platform));
    row("Measurement", claims.measurement, { mono: true });
    row("Report data", claims.eat_nonce, { mono: true });
    row("Policy digest", claims.policy_digest, { mono: true });
    if (typeof claims.iat === "number") row("Token issued", timeNode(new Date(claims.iat * 1000).toISOString()));
    if (typeof claims.exp === "number") {
      row("Token expires", timeNode(new Date(claims.exp * 1000).toISOString(), { relativeToo: true }));
    }
  }
  if (rows.length) parts.push(h("dl", { class: "kv" }, rows));
  if (claims) {
    parts.push(fieldGroup("TCB", claims.tcb), fieldGroup("Report", claims.claims));
  }
  return parts;
}

function verdict(cvm, claims) {
  const box = (tone, title, text) =>
    h("div", { class: ["verdict", tone] }, h("div", {}, h("strong", {}, title), h("div", { class: "verdict-text small" }, text)));
  if (cvm.attestation_error) return box("bad", "Refused", cvm.attestation_error);
  if (claims) return box("ok", "Verified", "The latest evidence verified against the policy.");
  return box("", "No evidence yet", "The agent sends evidence when it runs on SEV-SNP or TDX hardware.");
}

function fieldGroup(title, fields) {
  const entries = Object.entries(fields || {});
  if (entries.length === 0) return null;
  return h(
    "section",
    { class: "report-fields", "aria-label": `${title} fields` },
    h("h3", {}, title),
    h(
      "dl",
      { class: "kv" },
      entries.flatMap(([name, value]) => [h("dt", {}, labelOf(name)), h("dd", {}, fieldValue(name, value))]),
    ),
  );
}

function fieldValue(name, value) {
  if (typeof value === "boolean") return value ? "yes" : "no";
  if (typeof value === "number") {
    return HEX_FIELDS.has(name) ? h("code", {}, `0x${value.toString(16)}`) : String(value);
  }
  if (typeof value === "string") return /^[0-9a-f]{16,}$/.test(value) ? h("code", {}, value) : value;
  if (Array.isArray(value)) return value.length ? value.map(String).join(", ") : h("span", { class: "muted" }, "none");
  if (value && typeof value === "object") {
    // A decoded TCB: its parts. Its "raw" u64 is left out: past 2^53, JSON.parse rounds it.
    const parts = Object.entries(value).filter(([key]) => key !== "raw");
    if (parts.every(([, part]) => typeof part !== "object" || part === null)) {
      return parts.map(([key, part]) => `${TCB_PARTS[key] || key} ${part}`).join(" · ");
    }
    return h("code", {}, JSON.stringify(value));
  }
  return String(value);
}
