// Sign in with an access token (a JWT naming its domain), checked against the
// API before it is kept.

import { api, jwtClaims, session } from "../api.js";
import { field, h, setFieldError } from "../dom.js";
import { announce, busy } from "../ui.js";

export const title = "Sign in";

export function render(main, { flash, navigate }) {
  const input = h("input", {
    type: "password",
    name: "token",
    autocomplete: "off",
    spellcheck: "false",
    required: true,
    placeholder: "eyJhbGciOi…",
  });
  const submit = h("button", { type: "submit", class: "button primary" }, "Sign in");
  const form = h(
    "form",
    { novalidate: true },
    field({
      id: "access-token",
      label: "Access token",
      control: input,
      hint: "Kept in this tab only, until you sign out or close it.",
    }),
    submit,
  );
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const token = input.value.trim();
    setFieldError(input, null);
    const claims = token ? jwtClaims(token) : null;
    if (!token) return refuse(input, "Paste an access token.");
    if (!claims) return refuse(input, "This is not a token: a token is three base64url parts joined by dots.");
    const domain = claims.domain || claims.domain_id;
    if (typeof domain !== "string" || !domain) return refuse(input, "This token names no domain.");
    if (typeof claims.exp === "number" && claims.exp * 1000 <= Date.now()) {
      return refuse(input, "This token has expired.");
    }
    await busy(submit, "Checking…", async () => {
      try {
        await api(`/${encodeURIComponent(domain)}/cvms`, { query: { limit: 1 }, token });
      } catch (error) {
        const why = error.status === 401 ? "The service refused this token" : "The token could not be checked";
        return refuse(input, `${why}: ${error.message}`);
      }
      session.start(token, domain);
      announce(`Signed in to ${domain}.`);
      navigate("#/");
    });
  });

  main.append(
    h(
      "section",
      { class: "signin card", "aria-labelledby": "signin-title" },
      h("h1", { id: "signin-title", tabindex: "-1" }, "Sign in to the console"),
      h("p", { class: "subtitle" }, "Confidential VMs of your domain: create, watch, attest."),
      flash ? h("div", { class: "notice error", role: "alert" }, flash) : null,
      form,
      h(
        "div",
        { class: "help" },
        h("p", {}, "No token? On the service's machine, ", h("code", {}, "prism-backends token issue --domain ID"), " prints one."),
        h("p", {}, "Or open the link ", h("code", {}, "serve"), " prints when it starts: it signs you in at once."),
      ),
    ),
  );
}

function refuse(input, message) {
  setFieldError(input, message);
  input.focus();
  announce(message, { tone: "error" });
}
