// What every page shares: the status messages (an aria-live region), the
// confirmation dialog, the page heading, and errors shown in place.

import { h, replace } from "./dom.js";

let toastTimer = null;

/** Say something in the live region (screen readers announce it) and show it as a toast. */
export function announce(message, { tone = "", sticky = false } = {}) {
  const region = document.getElementById("status");
  clearTimeout(toastTimer);
  replace(region, h("div", { class: ["toast", tone] }, message));
  if (!sticky) toastTimer = setTimeout(() => replace(region), tone === "error" ? 9000 : 5000);
}

/** Ask before doing something that cannot be undone; resolves true when confirmed. */
export function confirmDialog({ title, text, confirmLabel = "Confirm" }) {
  const dialog = document.getElementById("confirm");
  document.getElementById("confirm-title").textContent = title;
  document.getElementById("confirm-text").textContent = text;
  document.getElementById("confirm-ok").textContent = confirmLabel;
  dialog.returnValue = "";
  return new Promise((resolve) => {
    dialog.addEventListener("close", () => resolve(dialog.returnValue === "confirm"), { once: true });
    dialog.showModal();
    // The safe choice has the focus: Enter does not delete anything by accident.
    document.getElementById("confirm-cancel").focus();
  });
}

/** The heading of a page; the router moves the focus to it. */
export function pageHead(title, { subtitle, actions } = {}) {
  return h(
    "div",
    { class: "page-head" },
    h("div", {}, h("h1", { tabindex: "-1" }, title), subtitle ? h("p", { class: "subtitle" }, subtitle) : null),
    actions ? h("div", { class: "actions" }, actions) : null,
  );
}

export function errorNotice(error, what) {
  return h(
    "div",
    { class: "notice error", role: "alert" },
    h("strong", {}, what),
    error.message || String(error),
  );
}

export function loading(text = "Loading…") {
  return h("p", { class: "empty", "aria-busy": "true" }, text);
}

/** Disable a button while `work` runs; its label says what is going on. */
export async function busy(button, label, work) {
  const before = button.textContent;
  button.disabled = true;
  button.textContent = label;
  try {
    return await work();
  } finally {
    button.disabled = false;
    button.textContent = before;
  }
}
