// The domain's CVMs: search by name (a substring) or id, a status filter, and
// the API's own paging (limit, offset, total). The filters live in the hash,
// so a filtered page can be bookmarked and Back works.

import { ApiError, api, cvmPath, domainPath } from "../api.js";
import { field, h, options, replace } from "../dom.js";
import { platformLabel, providerLabel, shortId, statePill, statusPill, timeNode } from "../format.js";
import { errorNotice, loading, pageHead } from "../ui.js";

export const title = "CVMs";

const STATUSES = [
  { value: "", label: "Active (all live CVMs)" },
  { value: "running", label: "Running" },
  { value: "starting", label: "Starting" },
  { value: "offline", label: "Offline" },
  { value: "stopped", label: "Stopped" },
  { value: "failed", label: "Failed" },
  { value: "inactive", label: "Inactive (deleted)" },
];
const PAGE_SIZES = [10, 25, 50, 100];
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

function readFilters(query) {
  const limit = Number(query.get("limit")) || 10;
  return {
    q: query.get("q") || "",
    status: query.get("status") || "",
    offset: Math.max(0, Number(query.get("offset")) || 0),
    limit: PAGE_SIZES.includes(limit) ? limit : 10,
  };
}

function writeFilters(filters) {
  const query = new URLSearchParams();
  if (filters.q) query.set("q", filters.q);
  if (filters.status) query.set("status", filters.status);
  if (filters.offset) query.set("offset", String(filters.offset));
  if (filters.limit !== 10) query.set("limit", String(filters.limit));
  const text = query.toString();
  history.replaceState(null, "", text ? `#/cvms?${text}` : "#/cvms");
}

export function render(main, { query }) {
  const filters = readFilters(query);
  const search = h("input", { type: "search", name: "q", value: filters.q, autocomplete: "off", placeholder: "web-1 or an id" });
  const status = options(h("select", { name: "status" }), STATUSES, filters.status);
  const size = options(
    h("select", { name: "limit" }),
    PAGE_SIZES.map((n) => ({ value: n, label: `${n} a page` })),
    filters.limit,
  );
  const results = h("div", { "aria-live": "polite", "aria-busy": "false" });
  const form = h(
    "form",
    { class: "filters", role: "search", "aria-label": "Filter CVMs" },
    field({ id: "cvm-search", label: "Search by name or id", control: search }),
    field({ id: "cvm-status", label: "Status", control: status }),
    field({ id: "cvm-page-size", label: "Page size", control: size }),
  );

  let generation = 0;
  let debounce = null;
  const refresh = async () => {
    const mine = ++generation;
    writeFilters(filters);
    results.setAttribute("aria-busy", "true");
    try {
      const page = await fetchPage(filters);
      if (mine !== generation) return;
      replace(results, table(page, filters, go));
    } catch (error) {
      if (mine !== generation) return;
      replace(results, errorNotice(error, "The CVMs could not be listed."));
    } finally {
      if (mine === generation) results.setAttribute("aria-busy", "false");
    }
  };
  const go = (offset) => {
    filters.offset = offset;
    refresh();
  };

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    clearTimeout(debounce);
    filters.q = search.value.trim();
    go(0);
  });
  search.addEventListener("input", () => {
    clearTimeout(debounce);
    debounce = setTimeout(() => {
      filters.q = search.value.trim();
      go(0);
    }, 300);
  });
  status.addEventListener("change", () => {
    filters.status = status.value;
    go(0);
  });
  size.addEventListener("change", () => {
    filters.limit = Number(size.value);
    go(0);
  });

  main.append(
    pageHead("CVMs", {
      subtitle: "Every confidential VM of this domain, newest first.",
      actions: h("a", { class: "button primary", href: "#/create" }, "Create CVM"),
    }),
    h("section", { class: "card" }, form, results),
  );
  results.append(loading());
  refresh();
  return () => {
    generation += 1;
    clearTimeout(debounce);
  };
}

async function fetchPage(filters) {
  if (UUID.test(filters.q)) {
    // An id: the CVM itself (the list's search matches names only).
    try {
      const cvm = await api(cvmPath(filters.q));
      return { cvms: [cvm], total: 1, limit: filters.limit, offset: 0 };
    } catch (error) {
      if (error instanceof ApiError && error.status === 404) return { cvms: [], total: 0, limit: filters.limit, offset: 0 };
      throw error;
    }
  }
  return api(domainPath("/cvms"), {
    query: { limit: filters.limit, offset: filters.offset, name: filters.q, status: filters.status },
  });
}

function table(page, filters, go) {
  if (page.cvms.length === 0) {
    const filtered = filters.q || filters.status;
    return h(
      "div",
      { class: "empty" },
      h("p", {}, filtered ? "No CVM matches these filters." : "No CVMs yet."),
      filtered ? null : h("a", { class: "button primary", href: "#/create" }, "Create the first one"),
    );
  }
  const cell = (label, ...content) => h("td", { "data-label": label }, ...content);
  const rows = page.cvms.map((cvm) =>
    h(
      "tr",
      {},
      cell(
        "Name",
        h("a", { class: "name", href: `#/cvms/${encodeURIComponent(cvm.id)}` }, cvm.name),
        h("span", { class: "sub", title: cvm.id }, shortId(cvm.id)),
      ),
      cell("Status", statusPill(cvm.status)),
      cell("State", statePill(cvm.state)),
      h("td", { class: "nowrap", "data-label": "Provider" }, providerLabel(cvm.provider)),
      h("td", { class: "nowrap", "data-label": "Platform" }, platformLabel(cvm.cc_platform)),
      h("td", { class: "num", "data-label": "vCPUs" }, String(cvm.vcpus)),
      h("td", { class: "num nowrap", "data-label": "Cost / month" }, cvm.monthly_cost_estimate),
      h("td", { class: "nowrap", "data-label": "Created" }, timeNode(cvm.created_at)),
    ),
  );
  const first = page.offset + 1;
  const last = page.offset + page.cvms.length;
  const previous = h("button", { type: "button", class: "button small", disabled: page.offset === 0 }, "← Previous");
  const next = h("button", { type: "button", class: "button small", disabled: last >= page.total }, "Next →");
  previous.addEventListener("click", () => go(Math.max(0, page.offset - page.limit)));
  next.addEventListener("click", () => go(page.offset + page.limit));
  const pages = Math.max(1, Math.ceil(page.total / page.limit));
  const current = Math.floor(page.offset / page.limit) + 1;
  return h(
    "div",
    {},
    h(
      "div",
      { class: "table-wrap" },
      h(
        "table",
        { class: "stacked", "aria-label": "CVMs" },
        h(
          "thead",
          {},
          h(
            "tr",
            {},
            ["Name", "Status", "State", "Provider", "Platform"].map((name) => h("th", { scope: "col" }, name)),
            h("th", { scope: "col", class: "num" }, "vCPUs"),
            h("th", { scope: "col", class: "num" }, "Cost/mo"),
            h("th", { scope: "col" }, "Created"),
          ),
        ),
        h("tbody", {}, rows),
      ),
    ),
    h(
      "nav",
      { class: "pager", "aria-label": "Pages" },
      h("span", { class: "range" }, `${first}–${last} of ${page.total} · page ${current} of ${pages}`),
      h("div", { class: "actions" }, previous, next),
    ),
  );
}
