// The console: hash routes over the public API, no build step.
//   #/            dashboard
//   #/cvms?...    the list (name, status, offset, limit in the query)
//   #/cvms/ID     a CVM's details
//   #/create      the create form
//   #/sign-in     sign in (also where any 401 leads)
// A link printed by `serve` opens the console at #code=..., a one-time code
// traded here for a token.

import { api, session, whenUnauthorized } from "./api.js";
import { replace } from "./dom.js";
import { announce } from "./ui.js";
import * as signIn from "./pages/signin.js";
import * as dashboard from "./pages/dashboard.js";
import * as list from "./pages/list.js";
import * as create from "./pages/create.js";
import * as details from "./pages/details.js";

const main = document.getElementById("main");
let cleanup = null;
let flash = null; // a message for the sign-in page (why the session ended)

function parseRoute() {
  const raw = location.hash.replace(/^#\/?/, "");
  const [path, query = ""] = raw.split("?", 2);
  const parts = path.split("/").filter(Boolean).map(decodeURIComponent);
  return { parts, query: new URLSearchParams(query) };
}

function pick({ parts }) {
  if (parts[0] === "sign-in") return { page: signIn, nav: null };
  if (parts[0] === "cvms" && parts[1]) return { page: details, nav: "cvms", id: parts[1] };
  if (parts[0] === "cvms") return { page: list, nav: "cvms" };
  if (parts[0] === "create") return { page: create, nav: "create" };
  return { page: dashboard, nav: "dashboard" };
}

function showChrome(signedIn, nav) {
  document.querySelector(".nav").hidden = !signedIn;
  document.querySelector(".session").hidden = !signedIn;
  document.querySelector(".domain").textContent = signedIn ? session.domain : "";
  for (const link of document.querySelectorAll("[data-nav]")) {
    if (link.dataset.nav === nav) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
}

export function navigate(hash) {
  if (location.hash === hash) route();
  else location.hash = hash;
}

async function route() {
  if (cleanup) {
    cleanup();
    cleanup = null;
  }
  const parsed = parseRoute();
  let target = pick(parsed);
  if (session.signedIn && session.remaining() <= 0) {
    session.end();
    flash = "Your session has expired. Sign in again.";
  }
  if (!session.signedIn && target.page !== signIn) {
    history.replaceState(null, "", "#/sign-in");
    target = { page: signIn, nav: null };
  }
  if (session.signedIn && target.page === signIn) {
    history.replaceState(null, "", "#/");
    target = { page: dashboard, nav: "dashboard" };
  }
  showChrome(session.signedIn, target.nav);
  replace(main);
  const context = { id: target.id, query: parsed.query, navigate, flash };
  flash = null;
  const done = target.page.render(main, context);
  document.title = `${target.page.title || "Console"} · prism-backends`;
  const heading = main.querySelector("h1");
  if (heading) heading.focus({ preventScroll: true });
  window.scrollTo(0, 0);
  cleanup = (await done) || null;
}

function signOut(message) {
  session.end();
  flash = message || null;
  navigate("#/sign-in");
}

// A refused token ends the session wherever it happens.
whenUnauthorized((error) => {
  if (!session.signedIn) return;
  signOut(`The service refused the access token (${error.message}). Sign in again.`);
});

// The skip link must not change the hash: the hash is the route.
document.querySelector(".skip").addEventListener("click", (event) => {
  event.preventDefault();
  (main.querySelector("h1") || main).focus();
});

document.getElementById("sign-out").addEventListener("click", () => {
  signOut(null);
  announce("Signed out.");
});

async function redeemCode() {
  const match = /(?:^#|[#&?])code=([A-Za-z0-9_-]+)/.exec(location.hash);
  if (!match) return;
  // The code is single-use: out of the address bar and the history at once.
  history.replaceState(null, "", `${location.pathname}${location.search}#/`);
  try {
    const granted = await api("/ui/sign-in", { method: "POST", body: { code: match[1] }, anonymous: true });
    session.start(granted.access_token, granted.domain_id);
    announce(`Signed in to ${granted.domain_id}.`);
  } catch (error) {
    session.end();
    flash = `The sign-in link did not work: ${error.message}. Run serve again for a new link, or paste an access token.`;
  }
}

async function start() {
  await redeemCode();
  window.addEventListener("hashchange", route);
  await route();
}

start();
