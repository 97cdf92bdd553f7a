// The console's small scripts: signing in and out through the API's session endpoint, and a
// regulator's approval signed in the browser with the regulator's own key.
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

// A PKCS#8 PEM private key as the DER bytes WebCrypto imports.
function pemToDer(pem) {
  const body = pem.replace(/-----(BEGIN|END) PRIVATE KEY-----/g, "").replace(/\s+/g, "");
  const raw = atob(body);
  return Uint8Array.from(raw, (c) => c.charCodeAt(0));
}

function toBase64(bytes) {
  return btoa(String.fromCharCode(...new Uint8Array(bytes)));
}

// The approval: the server gives the exact statement (the job's filed spec and code hashes,
// the regulator, the time, the note's hash); the browser signs it with the key the regulator
// picked; the form posts only the signature.
document.addEventListener("DOMContentLoaded", () => {
  const form = document.getElementById("approve-form");
  if (!form) return;
  form.addEventListener("submit", async (event) => {
    if (form.dataset.signed === "yes") return;
    event.preventDefault();
    const error = document.getElementById("approve-error");
    error.hidden = true;
    try {
      const file = document.getElementById("approval-key").files[0];
      if (!file) throw new Error("choose your private key file");
      const key = await crypto.subtle.importKey(
        "pkcs8", pemToDer(await file.text()), { name: "Ed25519" }, false, ["sign"]);
      const note = document.getElementById("note").value.trim();
      const query = new URLSearchParams({ note });
      const response = await fetch(
        `/approvals/${encodeURIComponent(form.dataset.job)}/statement?${query}`,
        { credentials: "same-origin" });
      if (!response.ok) throw new Error(await problemText(response));
      const statement = await response.json();
      const signature = await crypto.subtle.sign(
        { name: "Ed25519" }, key, new TextEncoder().encode(statement.statement));
      document.getElementById("note").value = note;
      document.getElementById("signed-at").value = statement.signed_at;
      document.getElementById("signature").value = toBase64(signature);
      form.dataset.signed = "yes";
      form.submit();
    } catch (err) {
      error.textContent = `The approval was not signed: ${err.message || err}`;
      error.hidden = false;
    }
  });
});
