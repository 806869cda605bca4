// Create a CVM from what the catalog offers (GET /offerings): a provider, then
// one of its platforms, then one of that platform's vCPU counts, each priced.
// Nothing else can be chosen, so the only refusals left are the service's own
// (a taken name, an agent URL it does not accept), shown at their field.

import { api, domainPath, splitFieldMessage } from "../api.js";
import { field, h, options, replace, setFieldError } from "../dom.js";
import { platformLabel, providerChoiceLabel, providerLabel } from "../format.js";
import { announce, busy, errorNotice, loading, pageHead } from "../ui.js";

export const title = "Create a CVM";

const LOG_LEVELS = ["debug", "info", "warn", "error"];

export async function render(main, { navigate }) {
  main.append(pageHead("Create a CVM", { subtitle: "Only what this service can create is offered." }));
  const body = h("div", {}, loading("Loading the catalog…"));
  main.append(body);
  let offerings;
  try {
    offerings = await api(domainPath("/offerings"));
  } catch (error) {
    if (error.status !== 401) replace(body, errorNotice(error, "The catalog could not be loaded."));
    return null;
  }
  if (offerings.providers.length === 0) {
    replace(body, h("div", { class: "notice error", role: "alert" }, h("strong", {}, "Nothing can be created here."), unavailableText(offerings)));
    return null;
  }
  replace(body, form(offerings, navigate));
  return null;
}

function unavailableText(offerings) {
  if (!offerings.unavailable.length) return "No provider is configured.";
  return offerings.unavailable.map((entry) => `${entry.name}: ${entry.reason}`).join("; ");
}

function form(offerings, navigate) {
  const provider = h("select", { name: "provider", required: true });
  const platform = h("select", { name: "cc_platform", required: true });
  const vcpus = h("select", { name: "vcpu", required: true });
  const name = h("input", { type: "text", name: "name", required: true, maxlength: 255, autocomplete: "off", placeholder: "web-1" });
  const logLevel = options(
    h("select", { name: "agent_log_level" }),
    LOG_LEVELS.map((level) => ({ value: level, label: level })),
    "info",
  );
  const agentUrl = h("input", { type: "text", name: "agent_url", autocomplete: "off", placeholder: "10.0.0.5:7002" });
  const agentUrlField = field({
    id: "create-agent-url",
    label: "Agent URL (optional)",
    control: agentUrl,
    hint: "Where the agent on your machine listens: host:port, or a grpc://, grpcs:// or https:// URL.",
  });
  const cost = h("p", { class: "cost", id: "create-cost" });
  const costNote = h("p", { class: "muted small" });
  const picked = h("dl", { class: "kv small" });
  const problem = h("div");
  const submit = h("button", { type: "submit", class: "button primary" }, "Create CVM");
  const controls = { name, agent_url: agentUrl, agent_log_level: logLevel, provider, cc_platform: platform, vcpu: vcpus };

  const providerOffer = () => offerings.providers.find((p) => p.name === provider.value);
  const platformOffer = () => providerOffer()?.platforms.find((p) => p.cc_platform === platform.value);
  const vcpuOffer = () => platformOffer()?.vcpus.find((v) => String(v.vcpus) === vcpus.value);

  const showCost = () => {
    const offer = vcpuOffer();
    cost.textContent = offer ? offer.monthly_cost_estimate : "–";
    costNote.textContent = offer ? "a month (730 hours), estimated" : "";
    replace(
      picked,
      h("dt", {}, "Provider"),
      h("dd", {}, providerLabel(provider.value)),
      h("dt", {}, "Platform"),
      h("dd", {}, platformLabel(platform.value)),
      h("dt", {}, "vCPUs"),
      h("dd", {}, vcpus.value || "–"),
    );
  };
  const fillVcpus = () => {
    const offer = platformOffer();
    const counts = offer ? offer.vcpus : [];
    const keep = counts.some((v) => String(v.vcpus) === vcpus.value) ? vcpus.value : String(counts[0]?.vcpus ?? "");
    options(
      vcpus,
      counts.map((v) => ({ value: v.vcpus, label: `${v.vcpus} vCPU${v.vcpus === 1 ? "" : "s"} · ${v.monthly_cost_estimate}/month` })),
      keep,
    );
    showCost();
  };
  const fillPlatforms = () => {
    const offer = providerOffer();
    const platforms = offer ? offer.platforms : [];
    const keep = platforms.some((p) => p.cc_platform === platform.value) ? platform.value : platforms[0]?.cc_platform;
    options(
      platform,
      platforms.map((p) => ({ value: p.cc_platform, label: platformLabel(p.cc_platform) })),
      keep,
    );
    // Only a machine the tenant runs itself has an agent URL to give.
    agentUrlField.hidden = !offer || offer.name !== "external";
    fillVcpus();
  };
  options(
    provider,
    offerings.providers.map((p) => ({ value: p.name, label: providerChoiceLabel(p.name) })),
    offerings.providers[0].name,
  );
  provider.addEventListener("change", fillPlatforms);
  platform.addEventListener("change", fillVcpus);
  vcpus.addEventListener("change", showCost);
  fillPlatforms();

  const element = h(
    "form",
    { class: "create-layout", novalidate: true },
    h(
      "section",
      { class: "card", "aria-label": "What to create" },
      problem,
      h(
        "fieldset",
        { class: "fieldset" },
        h("legend", {}, "Where it runs"),
        h(
          "div",
          { class: "form-fit" },
          field({ id: "create-provider", label: "Provider", control: provider }),
          field({ id: "create-platform", label: "Platform", control: platform }),
          field({ id: "create-vcpus", label: "vCPUs", control: vcpus }),
        ),
      ),
      h(
        "fieldset",
        { class: "fieldset" },
        h("legend", {}, "The CVM"),
        h(
          "div",
          { class: "form-grid" },
          field({ id: "create-name", label: "Name", control: name, hint: "Unique among this domain's CVMs." }),
          field({ id: "create-log-level", label: "Agent log level", control: logLevel }),
        ),
        h("div", { class: "field-gap" }, agentUrlField),
      ),
      h("div", { class: "actions" }, submit, h("a", { class: "button ghost", href: "#/cvms" }, "Cancel")),
    ),
    h(
      "aside",
      { class: "card summary", "aria-labelledby": "cost-title" },
      h("h2", { id: "cost-title" }, "Estimated cost"),
      h("div", { "aria-live": "polite" }, cost, costNote),
      picked,
      offerings.unavailable.length
        ? h(
            "p",
            { class: "hint" },
            "Not available now: ",
            offerings.unavailable.map((entry) => `${providerLabel(entry.name)} (${entry.reason})`).join("; "),
            ".",
          )
        : null,
    ),
  );

  element.addEventListener("submit", async (event) => {
    event.preventDefault();
    for (const control of Object.values(controls)) setFieldError(control, null);
    replace(problem);
    if (!name.value.trim()) {
      setFieldError(name, "Give the CVM a name.");
      name.focus();
      return;
    }
    const request = { name: name.value.trim(), agent_log_level: logLevel.value };
    if (!agentUrlField.hidden && agentUrl.value.trim()) request.agent_url = agentUrl.value.trim();
    await busy(submit, "Creating…", async () => {
      try {
        const path = `/cvms/${encodeURIComponent(provider.value)}/${encodeURIComponent(vcpus.value)}/${encodeURIComponent(platform.value)}`;
        const created = await api(domainPath(path), { method: "POST", body: request });
        announce(`Created ${created.name}.`);
        navigate(`#/cvms/${encodeURIComponent(created.id)}`);
      } catch (error) {
        if (error.status === 401) return;
        showRefusal(error, controls, problem);
      }
    });
  });
  return element;
}

function showRefusal(error, controls, problem) {
  let [fieldName, message] = splitFieldMessage(error.message);
  // A taken name is a 409 whose message names no field.
  if (!fieldName && error.code === "conflict" && /named/.test(error.message)) fieldName = "name";
  const control = controls[fieldName];
  const label = control ? document.querySelector(`label[for="${control.id}"]`)?.textContent : null;
  replace(
    problem,
    h(
      "div",
      { class: "notice error", role: "alert" },
      h("strong", {}, label ? `${label}: ${message}` : "The CVM was not created."),
      label ? null : error.message,
    ),
  );
  if (control) {
    setFieldError(control, message);
    control.focus();
  }
}
