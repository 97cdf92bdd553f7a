// Independent verification in the browser (WebCrypto only): an entry's RFC 6962 inclusion
// proof against a C2SP signed checkpoint, checked with the regulator's pinned Ed25519 key.
//
//   leaf = SHA-256(0x00 || entry bytes)        node = SHA-256(0x01 || left || right)
//   checkpoint note = "<origin>\n<size>\n<base64 root>\n" + "\n" + "— <name> <base64(keyid || sig)>\n"
//   keyid = SHA-256(<name> || "\n" || 0x01 || 32-byte public key)[0:4]
"use strict";

const PIN_KEY = "sandbox-console.pinned-key";
const enc = new TextEncoder();

function b64decode(text) {
  const raw = atob(text);
  const out = new Uint8Array(raw.length);
  for (let i = 0; i < raw.length; i++) out[i] = raw.charCodeAt(i);
  return out;
}
function b64encode(bytes) {
  let raw = "";
  for (const b of bytes) raw += String.fromCharCode(b);
  return btoa(raw);
}
function hexdecode(text) {
  const out = new Uint8Array(text.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = parseInt(text.substr(i * 2, 2), 16);
  return out;
}
function hex(bytes) {
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}
function concat(...parts) {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) { out.set(p, at); at += p.length; }
  return out;
}
function equal(a, b) {
  return a.length === b.length && a.every((v, i) => v === b[i]);
}
async function sha256(bytes) {
  return new Uint8Array(await crypto.subtle.digest("SHA-256", bytes));
}
const leafHash = (entry) => sha256(concat(new Uint8Array([0]), entry));
const nodeHash = (l, r) => sha256(concat(new Uint8Array([1]), l, r));

// RFC 9162 section 2.1.3.2. Indexes stay below 2**53, so arithmetic instead of bit operators.
async function rootFromPath(index, size, leaf, path) {
  if (index >= size) return null;
  let fn = index, sn = size - 1, r = leaf;
  for (const p of path) {
    if (sn === 0) return null;
    if (fn % 2 === 1 || fn === sn) {
      r = await nodeHash(p, r);
      if (fn % 2 === 0) {
        while (fn % 2 === 0 && fn !== 0) { fn = Math.floor(fn / 2); sn = Math.floor(sn / 2); }
      }
    } else {
      r = await nodeHash(r, p);
    }
    fn = Math.floor(fn / 2); sn = Math.floor(sn / 2);
  }
  return sn === 0 ? r : null;
}

// A signed note's text, its tree head, and whether the signature by `publicKey` holds.
async function verifyNote(note, publicKey) {
  const split = note.lastIndexOf("\n\n");
  if (split < 0 || !note.endsWith("\n")) throw new Error("not a signed note");
  const text = note.slice(0, split + 1);
  const lines = text.split("\n");
  const [origin, sizeLine, rootLine] = lines;
  if (lines.length < 4 || !/^(0|[1-9][0-9]*)$/.test(sizeLine)) throw new Error("not a checkpoint");
  const keyId = (await sha256(concat(enc.encode(origin + "\n"), new Uint8Array([1]), publicKey))).slice(0, 4);
  const key = await crypto.subtle.importKey("raw", publicKey, { name: "Ed25519" }, false, ["verify"]);
  let signed = false, ours = false;
  for (const line of note.slice(split + 2, -1).split("\n")) {
    if (!line.startsWith("\u2014 ")) throw new Error("a signature line starts with an em dash");
    const [name, blob64] = line.slice(2).split(" ");
    const blob = b64decode(blob64);
    if (name !== origin || !equal(blob.slice(0, 4), keyId)) continue;
    ours = true;
    signed = await crypto.subtle.verify({ name: "Ed25519" }, key, blob.slice(4), enc.encode(text));
  }
  return { origin, size: Number(sizeLine), root: b64decode(rootLine), signed, ours };
}

function pinned() {
  try { return localStorage.getItem(PIN_KEY); } catch (_) { return null; }
}

async function run(data) {
  const status = document.getElementById("verify-status");
  const steps = document.getElementById("verify-steps");
  const say = (ok, message) => {
    if (!steps) return;
    const li = document.createElement("li");
    li.className = ok ? "ok" : "failed";
    li.textContent = (ok ? "✓ " : "✗ ") + message;
    steps.appendChild(li);
  };
  if (steps) steps.textContent = "";
  const pin = pinned();
  const keyText = pin || data.public_key;
  let ok = true;
  try {
    if (!crypto.subtle) throw new Error("this page is not in a secure context: WebCrypto is unavailable");
    const publicKey = b64decode(keyText);
    if (publicKey.length !== 32) throw new Error("the key is not 32 bytes of Ed25519");
    const head = await verifyNote(data.checkpoint, publicKey);
    const whose = pin ? "your pinned key" : "the key this server shows (pin it to check against a key you trust)";
    if (!head.ours) { ok = false; say(false, `the checkpoint carries no signature by ${whose}`); }
    else if (!head.signed) { ok = false; say(false, `the checkpoint's Ed25519 signature does not verify with ${whose}`); }
    else say(true, `checkpoint of ${head.origin}, tree size ${head.size}, signature verified with ${whose}`);
    if ("entry" in data) {
      const leaf = await leafHash(enc.encode(data.entry));
      const stored = data.leaf_hash;
      if (hex(leaf) === stored) say(true, `leaf hash recomputed from the entry's bytes: ${hex(leaf)}`);
      else { ok = false; say(false, `leaf hash recomputed from the entry's bytes is ${hex(leaf)}, but the tree holds ${stored}: the entry was changed`); }
      if (head.size !== data.tree_size) { ok = false; say(false, `the proof is for tree size ${data.tree_size}, the checkpoint signs ${head.size}`); }
      const root = await rootFromPath(data.index, data.tree_size, leaf, data.audit_path.map(hexdecode));
      if (root && equal(root, head.root)) say(true, `audit path of ${data.audit_path.length} hashes leads from the leaf to the signed root`);
      else { ok = false; say(false, "the audit path from the recomputed leaf does not lead to the signed root"); }
    }
  } catch (error) {
    ok = false;
    say(false, String(error.message || error));
  }
  if (status) {
    status.textContent = ok ? "VERIFIED" : "FAILED";
    status.className = "badge " + (ok ? "ok" : "failed");
  }
  return ok;
}

function showPin(data) {
  const pin = pinned();
  const shown = document.getElementById("pinned-key");
  const warning = document.getElementById("pin-warning");
  if (shown) shown.textContent = pin || "none (the server's key is used)";
  if (warning) warning.hidden = !pin || pin === data.public_key;
}

document.addEventListener("DOMContentLoaded", () => {
  const holder = document.getElementById("proof-data");
  if (!holder) return;
  const data = JSON.parse(holder.textContent);
  const again = () => { showPin(data); run(data); };
  const form = document.getElementById("pin-form");
  if (form) {
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      const input = document.getElementById("pin-input");
      const value = input.value.trim();
      try {
        if (b64decode(value).length !== 32) throw new Error();
        localStorage.setItem(PIN_KEY, b64encode(b64decode(value)));
        input.setCustomValidity("");
      } catch (_) {
        input.setCustomValidity("a base64 Ed25519 public key: 32 bytes");
        input.reportValidity();
        return;
      }
      again();
    });
    document.getElementById("pin-server").addEventListener("click", () => {
      localStorage.setItem(PIN_KEY, data.public_key); again();
    });
    document.getElementById("unpin").addEventListener("click", () => {
      localStorage.removeItem(PIN_KEY); again();
    });
  }
  const button = document.getElementById("verify-again");
  if (button) button.addEventListener("click", again);
  again();
});
