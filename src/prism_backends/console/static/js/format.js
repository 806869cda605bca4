// How values of the API are shown.

import { h } from "./dom.js";

// Go's zero time: what the API says for "never".
const ZERO_TIME = "0001-01-01T00:00:00Z";

export function parseTime(text) {
  if (!text || text === ZERO_TIME) return null;
  const moment = new Date(text);
  return Number.isNaN(moment.getTime()) ? null : moment;
}

const dateTime = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "short" });
const timeOnly = new Intl.DateTimeFormat(undefined, { hour: "2-digit", minute: "2-digit", second: "2-digit" });
const relative = new Intl.RelativeTimeFormat(undefined, { numeric: "auto" });

export function formatDateTime(text) {
  const moment = parseTime(text);
  return moment ? dateTime.format(moment) : "never";
}

export function formatClock(text) {
  const moment = parseTime(text);
  return moment ? timeOnly.format(moment) : "";
}

/** "in 3 days", "5 minutes ago" */
export function fromNow(moment, now = Date.now()) {
  const seconds = (moment.getTime() - now) / 1000;
  const steps = [
    [60, "second"],
    [60, "minute"],
    [24, "hour"],
    [30, "day"],
    [12, "month"],
    [Infinity, "year"],
  ];
  let value = seconds;
  for (const [size, unit] of steps) {
    if (Math.abs(value) < size) return relative.format(Math.round(value), unit);
    value /= size;
  }
  return "";
}

/** A <time> with the local date and the exact UTC instant as its title. */
export function timeNode(text, { relativeToo = false } = {}) {
  const moment = parseTime(text);
  if (!moment) return h("span", { class: "muted" }, "never");
  const shown = relativeToo ? `${dateTime.format(moment)} (${fromNow(moment)})` : dateTime.format(moment);
  return h("time", { datetime: text, title: text }, shown);
}

/** How long a stretch of time is, to the unit that matters: "41 s", "16 min", "5 h 20 min", "3 days". */
export function formatSpan(milliseconds) {
  const seconds = Math.max(0, Math.round(milliseconds / 1000));
  if (seconds < 90) return `${seconds} s`;
  const minutes = Math.round(seconds / 60);
  if (minutes < 90) return `${minutes} min`;
  const hours = Math.floor(minutes / 60);
  if (hours < 48) return minutes % 60 ? `${hours} h ${minutes % 60} min` : `${hours} h`;
  return `${Math.round(hours / 24)} days`;
}

export function percent(fraction) {
  if (fraction === null || fraction === undefined || Number.isNaN(fraction)) return "–";
  const value = fraction * 100;
  return `${value >= 99.95 || value === 0 ? value.toFixed(0) : value.toFixed(1)}%`;
}

export const PLATFORM_LABELS = { "sev-snp": "AMD SEV-SNP", tdx: "Intel TDX" };
export const PROVIDER_LABELS = {
  external: "External",
  ultraviolet: "Ultraviolet",
  azure: "Azure",
  gcp: "Google Cloud",
  aws: "AWS",
};

export const platformLabel = (name) => PLATFORM_LABELS[name] || name;
export const providerLabel = (name) => PROVIDER_LABELS[name] || name;
// Where the create form offers a provider, what it means.
export const providerChoiceLabel = (name) => (name === "external" ? "External (your own machine)" : providerLabel(name));

// The agent's liveness (status) and the provisioning lifecycle (state) as a tone.
const STATUS_TONES = {
  running: "ok",
  starting: "info",
  offline: "warn",
  stopped: "warn",
  failed: "bad",
  inactive: "",
};
const STATE_TONES = {
  provisioned: "ok",
  pending: "info",
  provisioning: "info",
  deleting: "warn",
  failed: "bad",
  deleted: "",
};

export function statusPill(status) {
  return h("span", { class: ["pill", STATUS_TONES[status]] }, status || "unknown");
}

export function statePill(state) {
  return h("span", { class: ["pill", STATE_TONES[state]] }, state || "unknown");
}

export function shortId(id) {
  return id && id.length > 13 ? `${id.slice(0, 8)}…` : id;
}

/** Something safe to put in a file name. */
export function fileSafe(text) {
  return (text || "cvm").replace(/[^A-Za-z0-9._-]+/g, "-").replace(/^-+|-+$/g, "").slice(0, 80) || "cvm";
}
