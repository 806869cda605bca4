// One CVM: what it is, its agent's events as they arrive (polled every 2 s:
// the events route pages newest first and has no long-poll or cursor), its
// uptime, its attestation verdict, the policy and agent configuration to
// download, its agent certificates, and delete.

import { ApiError, api, cvmPath, fromBase64, saveBlob } from "../api.js";
import { h, replace } from "../dom.js";
import { uptimeChart } from "../chart.js";
import { attestationView } from "../verdict.js";
import {
  fileSafe,
  formatClock,
  parseTime,
  percent,
  platformLabel,
  providerLabel,
  statePill,
  statusPill,
  timeNode,
} from "../format.js";
import { announce, busy, confirmDialog, errorNotice, loading, pageHead } from "../ui.js";

export const title = "CVM";

const POLL_MS = 2000;
const STATS_EVERY = 5; // polls: uptime samples come every stats interval, not every 2 s
const EVENTS_KEPT = 100;

export async function render(main, { id, navigate }) {
  main.append(loading("Loading the CVM…"));
  let cvm;
  try {
    cvm = await api(cvmPath(id));
  } catch (error) {
    replace(
      main,
      pageHead("CVM not found"),
      errorNotice(error, error.status === 404 ? "No live CVM has this id in your domain." : "The CVM could not be loaded."),
      h("a", { class: "button", href: "#/cvms" }, "← Back to the list"),
    );
    return null;
  }

  const view = {
    cvm,
    events: new Map(),
    agentState: null,
    overview: h("dl", { class: "facts" }),
    problem: h("div"),
    uptime: h("div", {}, loading()),
    uptimeValue: h("span", { class: "uptime-value" }),
    attestation: h("div", {}, loading()),
    eventList: h("ol", { class: "events", role: "log", "aria-label": "Agent events, newest first" }),
    eventsEmpty: h("p", { class: "empty small" }, "No events yet. They appear here as the agent sends them."),
    live: h("span", { class: "live" }, "Live"),
    certificates: h("div", {}, loading()),
    statsFailed: false,
  };

  const heading = h("span");
  const subtitle = h("code");
  const policyButton = h("button", { type: "button", class: "button" }, "Download policy");
  const configButton = h("button", { type: "button", class: "button" }, "Download agent config");
  const deleteButton = h("button", { type: "button", class: "button danger" }, "Delete");
  const issueButton = h("button", { type: "button", class: "button small" }, "Issue certificate");

  const head = pageHead(heading, { actions: [policyButton, configButton, deleteButton] });
  head.querySelector("h1").after(h("p", { class: "subtitle" }, subtitle));

  replace(
    main,
    head,
    view.problem,
    h("section", { class: "card", "aria-labelledby": "overview-title" }, h("h2", { id: "overview-title" }, "Overview"), view.overview),
    h(
      "div",
      { class: "grid-2" },
      h(
        "section",
        { class: "card", "aria-labelledby": "events-title" },
        h("div", { class: "card-head" }, h("h2", { id: "events-title" }, "Events"), view.live),
        view.eventsEmpty,
        view.eventList,
      ),
      h(
        "div",
        { class: "stack" },
        h(
          "section",
          { class: "card", "aria-labelledby": "attestation-title" },
          h("h2", { id: "attestation-title" }, "Attestation"),
          view.attestation,
        ),
        h(
          "section",
          { class: "card", "aria-labelledby": "uptime-title" },
          h("div", { class: "card-head" }, h("h2", { id: "uptime-title" }, "Uptime, last 24 hours"), view.uptimeValue),
          view.uptime,
        ),
      ),
    ),
    h(
      "section",
      { class: "card", "aria-labelledby": "certificates-title" },
      h(
        "div",
        { class: "card-head" },
        h("h2", { id: "certificates-title" }, "Agent certificates"),
        issueButton,
      ),
      view.certificates,
    ),
  );

  const showCvm = () => {
    heading.textContent = view.cvm.name;
    subtitle.textContent = view.cvm.id;
    document.title = `${view.cvm.name} · prism-backends`;
    replace(view.overview, facts(view.cvm, view.agentState));
    replace(
      view.problem,
      view.cvm.error
        ? h("div", { class: "notice error", role: "alert" }, h("strong", {}, "Provisioning failed"), view.cvm.error)
        : null,
    );
  };
  showCvm();
  head.querySelector("h1").focus({ preventScroll: true });

  let stopped = false;
  let timer = null;
  let polls = 0;
  const name = () => fileSafe(view.cvm.name);

  const loadEvents = async (initial) => {
    const page = await api(cvmPath(id, "/events"), { query: { limit: EVENTS_KEPT } });
    const arrived = page.events.filter((event) => !view.events.has(event.id));
    for (const event of arrived) view.events.set(event.id, { ...event, fresh: !initial });
    if (arrived.length === 0 && !initial) return arrived;
    const ordered = [...view.events.values()].sort((a, b) => Number(b.id) - Number(a.id)).slice(0, EVENTS_KEPT);
    view.events = new Map(ordered.map((event) => [event.id, event]));
    // The agent's state is what its latest "state" event said (the CVM row keeps
    // only liveness); older than this window it is unknown.
    const state = ordered.find((event) => event.kind === "state");
    view.agentState = state ? state.message : null;
    view.eventsEmpty.hidden = ordered.length > 0;
    replace(view.eventList, ordered.map(eventItem));
    for (const event of ordered) event.fresh = false;
    return arrived;
  };

  const loadStats = async () => {
    try {
      const stats = await api(cvmPath(id, "/statistics"), { query: { days: 1, limit: 1000 } });
      view.uptimeValue.textContent = stats.total ? percent(stats.uptime) : "";
      replace(view.uptime, uptimeChart(stats, view.cvm.name));
      replace(view.attestation, attestationView(view.cvm, stats.attestation));
    } catch (error) {
      if (error.status === 401) throw error;
      replace(view.uptime, errorNotice(error, "Uptime could not be loaded."));
      replace(view.attestation, attestationView(view.cvm, null));
    }
  };

  const loadCertificates = async () => {
    try {
      const list = await api(cvmPath(id, "/certificates"));
      replace(view.certificates, certificateTable(list.certificates, certificateAction));
    } catch (error) {
      if (error.status === 401) throw error;
      replace(view.certificates, errorNotice(error, "The certificates could not be loaded."));
    }
  };

  const certificateAction = async (kind, certificate, button) => {
    if (kind === "revoke") {
      const confirmed = await confirmDialog({
        title: "Revoke this certificate?",
        text:
          `Serial ${certificate.serial}. An agent connected with it is told to go, and no ` +
          "connection with it is accepted again.",
        confirmLabel: "Revoke",
      });
      if (!confirmed) return;
    }
    await busy(button, kind === "renew" ? "Renewing…" : "Revoking…", async () => {
      try {
        const done = await api(cvmPath(id, `/certificates/${encodeURIComponent(certificate.serial)}/${kind}`), {
          method: "POST",
        });
        announce(
          kind === "renew"
            ? `Renewed: certificate ${done.serial.slice(0, 12)}… is pending until the agent connects with it.`
            : `Revoked certificate ${done.serial.slice(0, 12)}….`,
        );
      } catch (error) {
        announce(`The certificate could not be ${kind === "renew" ? "renewed" : "revoked"}: ${error.message}`, {
          tone: "error",
        });
      }
    });
    await loadCertificates();
  };

  issueButton.addEventListener("click", () =>
    busy(issueButton, "Issuing…", async () => {
      try {
        const issued = await api(cvmPath(id, "/certificates"), { method: "POST" });
        announce(`Issued certificate ${issued.serial.slice(0, 12)}…; the agent configuration now carries it.`);
      } catch (error) {
        announce(`No certificate was issued: ${error.message}`, { tone: "error" });
      }
      await loadCertificates();
    }),
  );

  policyButton.addEventListener("click", () =>
    busy(policyButton, "Downloading…", async () => {
      try {
        const body = await api(cvmPath(id, "/attestation_policy"));
        const bytes = fromBase64(body.attestation_policy);
        const json = looksLikeJson(bytes);
        saveBlob(
          new Blob([bytes], { type: json ? "application/json" : "application/cbor" }),
          `${name()}-attestation-policy.${json ? "json" : "cbor"}`,
        );
        announce("The attestation policy is downloaded.");
      } catch (error) {
        announce(`No policy to download: ${error.message}`, { tone: "error" });
      }
    }),
  );

  configButton.addEventListener("click", () =>
    busy(configButton, "Downloading…", async () => {
      try {
        const config = await api(cvmPath(id, "/agent_config"));
        saveBlob(
          new Blob([`${JSON.stringify(config, null, 2)}\n`], { type: "application/json" }),
          `${name()}-agent-config.json`,
        );
        announce("The agent configuration is downloaded. It holds the agent's private key: keep it safe.");
      } catch (error) {
        announce(`No agent configuration: ${error.message}`, { tone: "error" });
      }
    }),
  );

  deleteButton.addEventListener("click", async () => {
    const confirmed = await confirmDialog({
      title: `Delete ${view.cvm.name}?`,
      text:
        "Its machine is torn down, its agent is told to stop and its certificates are revoked. " +
        "This cannot be undone.",
      confirmLabel: "Delete CVM",
    });
    if (!confirmed) return;
    await busy(deleteButton, "Deleting…", async () => {
      try {
        await api(cvmPath(id), { method: "DELETE" });
        stopped = true;
        announce(`Deleted ${view.cvm.name}.`);
        navigate("#/cvms");
      } catch (error) {
        announce(`${view.cvm.name} was not deleted: ${error.message}`, { tone: "error" });
      }
    });
  });

  const poll = async () => {
    if (stopped) return;
    polls += 1;
    try {
      if (!document.hidden) {
        const [latest, arrived] = await Promise.all([api(cvmPath(id)), loadEvents(false)]);
        if (stopped) return;
        const moved = latest.updated_at !== view.cvm.updated_at || latest.status !== view.cvm.status;
        view.cvm = latest;
        if (moved || arrived.length) showCvm();
        // A connection with a newer certificate revokes the old one; certificate
        // events warn of an expiry.
        if (arrived.some((event) => event.kind === "connected" || event.kind === "certificate")) {
          await loadCertificates();
        }
        if (moved || polls % STATS_EVERY === 0) await loadStats();
        view.live.classList.remove("paused");
        view.live.textContent = "Live";
      }
    } catch (error) {
      if (error instanceof ApiError && error.status === 404) {
        stopped = true;
        announce(`${view.cvm.name} no longer exists.`, { tone: "error" });
        view.live.classList.add("paused");
        view.live.textContent = "Deleted";
        return;
      }
      if (error.status === 401) return;
      view.live.classList.add("paused");
      view.live.textContent = "Reconnecting…";
    }
    if (!stopped) timer = setTimeout(poll, POLL_MS);
  };

  try {
    await Promise.all([loadEvents(true), loadStats(), loadCertificates()]);
    showCvm();
  } catch (error) {
    if (error.status === 401) return null;
  }
  timer = setTimeout(poll, POLL_MS);
  return () => {
    stopped = true;
    clearTimeout(timer);
  };
}

function looksLikeJson(bytes) {
  for (const byte of bytes) {
    if (byte === 0x20 || byte === 0x0a || byte === 0x0d || byte === 0x09) continue;
    return byte === 0x7b || byte === 0x5b; // { or [
  }
  return false;
}

function facts(cvm, agentState) {
  const fact = (label, ...value) => h("div", {}, h("dt", {}, label), h("dd", {}, ...value));
  const live = cvm.status === "running";
  return [
    fact("Status", statusPill(cvm.status)),
    fact(
      "Agent state",
      agentState
        ? h("span", {}, agentState, live ? null : h("span", { class: "muted small" }, " (last reported)"))
        : h("span", { class: "muted" }, live ? "not reported" : "no agent yet"),
    ),
    fact("Lifecycle", statePill(cvm.state)),
    fact("Provider", providerLabel(cvm.provider)),
    fact("Platform", platformLabel(cvm.cc_platform)),
    fact("vCPUs", String(cvm.vcpus)),
    fact("Agent log level", cvm.agent_log_level),
    fact("Monthly cost (estimate)", cvm.monthly_cost_estimate),
    fact("Agent URL", cvm.agent_url ? h("code", {}, cvm.agent_url) : h("span", { class: "muted" }, "not set")),
    fact("Created", timeNode(cvm.created_at, { relativeToo: true })),
    fact("Updated", timeNode(cvm.updated_at, { relativeToo: true })),
    fact("CVM id", h("code", {}, cvm.cvm_id)),
    fact("Domain", h("code", {}, cvm.domain_id)),
  ];
}

const KIND_TONES = {
  attestation_failed: "error",
  disconnected: "error",
  attestation_verified: "ok",
  connected: "ok",
};

function eventItem(event) {
  const tone = event.level === "error" ? "error" : KIND_TONES[event.kind] || "";
  // Scalars only: an appraisal's TCB and report fields are in the Attestation card,
  // labelled, rather than dumped here as JSON.
  const detail = Object.entries(event.details || {})
    .filter(([, value]) => value === null || typeof value !== "object")
    .map(([key, value]) => `${key}: ${value}`)
    .join(" · ");
  return h(
    "li",
    { class: event.fresh ? "fresh" : null, "data-kind": event.kind },
    h("time", { datetime: event.timestamp, title: event.timestamp }, formatClock(event.timestamp)),
    h("span", { class: ["event-kind", tone] }, event.kind),
    h(
      "span",
      { class: "event-message" },
      event.level && event.kind === "log" ? h("span", { class: "muted" }, `[${event.level}] `) : null,
      event.message || h("span", { class: "muted" }, "(no message)"),
      detail ? h("span", { class: "sub muted small" }, ` ${detail}`) : null,
    ),
  );
}

const CERT_TONES = { active: "ok", pending: "info", revoked: "bad", expired: "warn" };
const SOON_DAYS = 30;

function certificateTable(certificates, act) {
  if (certificates.length === 0) return h("p", { class: "empty small" }, "No certificates.");
  const cell = (label, ...content) => h("td", { "data-label": label }, ...content);
  const rows = certificates.map((certificate) => {
    const notAfter = parseTime(certificate.not_after);
    const days = notAfter ? (notAfter - Date.now()) / 86_400_000 : 0;
    const expiry = h(
      "span",
      { class: days < 0 ? "expiry-past" : days < SOON_DAYS ? "expiry-soon" : null },
      days < 0 ? `expired ${Math.ceil(-days)} days ago` : `expires in ${Math.floor(days)} days`,
    );
    const buttons = [];
    if (certificate.state === "active" || certificate.state === "pending") {
      const renew = h("button", { type: "button", class: "button small", "aria-label": `Renew ${certificate.serial}` }, "Renew");
      renew.addEventListener("click", () => act("renew", certificate, renew));
      buttons.push(renew);
    }
    if (certificate.state !== "revoked" && certificate.state !== "expired") {
      const revoke = h(
        "button",
        { type: "button", class: "button small danger", "aria-label": `Revoke ${certificate.serial}` },
        "Revoke",
      );
      revoke.addEventListener("click", () => act("revoke", certificate, revoke));
      buttons.push(revoke);
    }
    return h(
      "tr",
      { "data-serial": certificate.serial },
      cell("Serial", h("code", { title: `SHA-256 ${certificate.fingerprint_sha256}` }, certificate.serial)),
      cell("State", h("span", { class: ["pill", CERT_TONES[certificate.state]] }, certificate.state)),
      cell("Not after", h("span", {}, timeNode(certificate.not_after), h("br"), expiry)),
      cell("Not before", timeNode(certificate.not_before)),
      cell("Actions", h("div", { class: "actions" }, buttons)),
    );
  });
  return h(
    "div",
    { class: "table-wrap" },
    h(
      "table",
      { class: "stacked", "aria-label": "Agent certificates" },
      h(
        "thead",
        {},
        h("tr", {}, ["Serial", "State", "Not after", "Not before", "Actions"].map((name) => h("th", { scope: "col" }, name))),
      ),
      h("tbody", {}, rows),
    ),
  );
}
