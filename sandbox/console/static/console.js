// The console's small scripts: signing in and out through the API's session endpoint.
"use strict";

async function problemText(response) {
  try {
    const body = await response.json();
    return body.detail || body.title || `${response.status}`;
  } catch (_) {
    return `the server answered ${response.status}`;
  }
}

document.addEventListener("DOMContentLoaded", () => {
  const form = document.getElementById("sign-in");
  if (form) {
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      const error = document.getElementById("sign-in-error");
      error.hidden = true;
      const token = document.getElementById("token").value.trim();
      const response = await fetch("/auth/session", {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ token }),
        credentials: "same-origin",
      });
      if (response.ok) {
        const who = await response.json();
        // A company's console is its own page; the rest starts at the overview.
        const home = who.role === "company" ? `/console/companies/${encodeURIComponent(who.principal_id)}` : "/console";
        const next = form.dataset.next;
        window.location.assign(next && next !== "/console" ? next : home);
      } else {
        error.textContent = "Sign-in failed: " + (await problemText(response));
        error.hidden = false;
        document.getElementById("token").focus();
      }
    });
  }
  const out = document.getElementById("sign-out");
  if (out) {
    out.addEventListener("click", async () => {
      await fetch("/auth/session", { method: "DELETE", credentials: "same-origin" });
      window.location.assign("/console/sign-in");
    });
  }
});
