// The domain at a glance: counts of its CVMs and each one's uptime.

import { api, cvmPath, domainPath } from "../api.js";
import { h, replace } from "../dom.js";
import { uptimeChart } from "../chart.js";
import { percent, platformLabel, providerLabel, statusPill } from "../format.js";
import { errorNotice, loading, pageHead } from "../ui.js";

export const title = "Dashboard";

const PAGE = 100; // the list's largest page
const MAX_COUNTED = 1000; // beyond this the tiles say "of the newest 1000"
const CHARTS = 12;
const REFRESH_MS = 10_000;

// The tiles, from the two fields a CVM has (there is no per-tile route):
// `state` is the provisioning lifecycle the workers drive, `status` the
// liveness of the CVM's agent.
//   Active        every live CVM (not deleted): the list's own total.
//   Busy          the service is working on it: state pending, provisioning or deleting.
//   Online        its agent is connected and answering: status running.
//   Initializing  its machine is there (state provisioned) and its agent has not
//                 connected yet: status starting.
//   Attention     something is wrong: status offline, stopped or failed, or state failed.
const BUSY_STATES = new Set(["pending", "provisioning", "deleting"]);
const TROUBLED_STATUSES = new Set(["offline", "stopped", "failed"]);

export function tally(cvms) {
  const counts = { busy: 0, online: 0, initializing: 0, attention: 0 };
  for (const cvm of cvms) {
    if (BUSY_STATES.has(cvm.state)) counts.busy += 1;
    if (cvm.status === "running") counts.online += 1;
    if (cvm.state === "provisioned" && cvm.status === "starting") counts.initializing += 1;
    if (TROUBLED_STATUSES.has(cvm.status) || cvm.state === "failed") counts.attention += 1;
  }
  return counts;
}

async function allLive() {
  const cvms = [];
  let total = 0;
  for (let offset = 0; offset < MAX_COUNTED; offset += PAGE) {
    const page = await api(domainPath("/cvms"), { query: { limit: PAGE, offset } });
    total = page.total;
    cvms.push(...page.cvms);
    if (cvms.length >= total || page.cvms.length === 0) break;
  }
  return { cvms, total };
}

export function render(main) {
  const tiles = h("div", { class: "tiles" }, loading());
  const charts = h("div", { class: "charts" });
  const note = h("p", { class: "muted small" });
  main.append(
    pageHead("Dashboard", {
      subtitle: "Your domain's confidential VMs at a glance.",
      actions: h("a", { class: "button primary", href: "#/create" }, "Create CVM"),
    }),
    h("section", { "aria-label": "Counts" }, tiles, note),
    h(
      "section",
      { class: "card", "aria-labelledby": "uptime-title" },
      h(
        "div",
        { class: "card-head" },
        h("h2", { id: "uptime-title" }, "Uptime, last 24 hours"),
        h("a", { href: "#/cvms" }, "All CVMs →"),
      ),
      charts,
    ),
  );

  let stopped = false;
  let timer = null;
  const refresh = async () => {
    try {
      const { cvms, total } = await allLive();
      if (stopped) return;
      const counts = tally(cvms);
      replace(
        tiles,
        tile("Active", total, "accent", "live CVMs"),
        tile("Busy", counts.busy, "info", "being provisioned or deleted"),
        tile("Online", counts.online, "ok", "agent connected"),
        tile("Initializing", counts.initializing, "warn", "waiting for the agent"),
        tile("Need attention", counts.attention, counts.attention ? "bad" : "", "offline, stopped or failed"),
      );
      note.textContent = total > cvms.length ? `Counted the newest ${cvms.length} of ${total} CVMs.` : "";
      const shown = cvms.slice(0, CHARTS);
      const stats = await Promise.all(
        shown.map((cvm) =>
          api(cvmPath(cvm.id, "/statistics"), { query: { days: 1, limit: 1000 } }).catch((error) => ({ error })),
        ),
      );
      if (stopped) return;
      if (shown.length === 0) {
        replace(charts, h("p", { class: "empty" }, "No CVMs yet. ", h("a", { href: "#/create" }, "Create one"), "."));
      } else {
        replace(charts, shown.map((cvm, index) => chartCard(cvm, stats[index])));
      }
    } catch (error) {
      if (stopped || error.status === 401) return;
      replace(tiles, errorNotice(error, "The dashboard could not be loaded."));
    }
    if (!stopped) timer = setTimeout(refresh, REFRESH_MS);
  };
  refresh();
  return () => {
    stopped = true;
    clearTimeout(timer);
  };
}

function tile(label, value, tone, hint) {
  return h(
    "div",
    { class: ["tile", tone], "data-tile": label.toLowerCase() },
    h("p", { class: "tile-label" }, label),
    h("p", { class: "tile-value" }, String(value)),
    h("p", { class: "tile-note" }, hint),
  );
}

function chartCard(cvm, stats) {
  return h(
    "article",
    { class: "chart-card" },
    h(
      "div",
      { class: "card-head" },
      h("h3", {}, h("a", { href: `#/cvms/${encodeURIComponent(cvm.id)}` }, cvm.name)),
      stats.error ? null : h("span", { class: "uptime-value" }, stats.total ? percent(stats.uptime) : "–"),
    ),
    h(
      "p",
      { class: "muted small" },
      statusPill(cvm.status),
      ` ${providerLabel(cvm.provider)} · ${platformLabel(cvm.cc_platform)} · ${cvm.vcpus} vCPU`,
    ),
    stats.error ? errorNotice(stats.error, "No uptime.") : uptimeChart(stats, cvm.name),
  );
}
