// Independent verification in the browser (WebCrypto only): an entry's RFC 6962 inclusion
// proof against a C2SP signed checkpoint, checked with the regulator's pinned Ed25519 key;
// and the log's history pinned in the browser: the largest checkpoint verified here is kept,
// every later one must be the same tree or a proven extension of it (RFC 9162 consistency),
// and a rollback or a split view raises an alarm, kept with both signed notes, that shows on
// every console page until the reader dismisses it.
//
//   leaf = SHA-256(0x00 || entry bytes)        node = SHA-256(0x01 || left || right)
//   checkpoint note = "<origin>\n<size>\n<base64 root>\n" + "\n" + "— <name> <base64(keyid || sig)>\n"
//   keyid = SHA-256(<name> || "\n" || 0x01 || 32-byte public key)[0:4]
"use strict";

const PIN_KEY = "sandbox-console.pinned-key";
const HEAD_KEY = "sandbox-console.verified-checkpoint";
const ALARM_KEY = "sandbox-console.ledger-alarm";
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

// RFC 9162 section 2.1.4.2: does `proof` show the tree of `oldSize` is a prefix of `newSize`'s?
async function consistent(oldSize, newSize, oldRoot, newRoot, proof) {
  if (oldSize === newSize) return proof.length === 0 && equal(oldRoot, newRoot);
  if (oldSize === 0) return proof.length === 0;
  if (oldSize > newSize || proof.length === 0) return false;
  let power = oldSize;
  while (power % 2 === 0) power /= 2;
  const path = power === 1 ? [oldRoot, ...proof] : proof;
  let fn = oldSize - 1, sn = newSize - 1;
  while (fn % 2 === 1) { fn = Math.floor(fn / 2); sn = Math.floor(sn / 2); }
  let fr = path[0], sr = path[0];
  for (const c of path.slice(1)) {
    if (sn === 0) return false;
    if (fn % 2 === 1 || fn === sn) {
      fr = await nodeHash(c, fr);
      sr = await nodeHash(c, sr);
      while (fn % 2 === 0 && fn !== 0) { fn = Math.floor(fn / 2); sn = Math.floor(sn / 2); }
    } else {
      sr = await nodeHash(sr, c);
    }
    fn = Math.floor(fn / 2); sn = Math.floor(sn / 2);
  }
  return sn === 0 && equal(fr, oldRoot) && equal(sr, newRoot);
}

function pinned() {
  try { return localStorage.getItem(PIN_KEY); } catch (_) { return null; }
}
function kept(name) {
  try { return JSON.parse(localStorage.getItem(name) || "null"); } catch (_) { return null; }
}
function keep(name, value) {
  try {
    if (value === null) localStorage.removeItem(name);
    else localStorage.setItem(name, JSON.stringify(value));
  } catch (_) { /* storage disabled: nothing is pinned */ }
}

function showAlarm() {
  const banner = document.getElementById("ledger-alarm");
  const alarm = kept(ALARM_KEY);
  if (!banner) return;
  banner.hidden = !alarm;
  if (!alarm) return;
  const problem = alarm.problem.charAt(0).toUpperCase() + alarm.problem.slice(1);
  document.getElementById("ledger-alarm-problem").textContent = `${problem} (seen ${alarm.time}).`;
  document.getElementById("ledger-alarm-notes").textContent =
    `Verified before in this browser:\n${alarm.pinned}\nShown now:\n${alarm.shown}`;
  const link = document.getElementById("ledger-alarm-evidence");
  link.href = "data:application/json;charset=utf-8," + encodeURIComponent(JSON.stringify(alarm, null, 1));
}

// The log's history against the checkpoint this browser verified before (same origin and
// key): the same tree, or a proven extension of it, which is then kept instead.
async function checkHistory(data, head, keyText, say) {
  const held = kept(HEAD_KEY);
  const remember = () => keep(HEAD_KEY, {
    origin: head.origin, key: keyText, size: head.size, root: b64encode(head.root), note: data.checkpoint,
  });
  if (!held || held.origin !== head.origin || held.key !== keyText) {
    remember();
    say(true, `this browser now holds the checkpoint of size ${head.size} and checks on every visit that the log extends it`);
    return true;
  }
  const heldRoot = b64decode(held.root);
  let problem = null;
  if (head.size < held.size) {
    problem = `the log was rolled back: it signs size ${head.size}, after this browser verified size ${held.size}`;
  } else if (head.size === held.size && !equal(heldRoot, head.root)) {
    problem = `a split view: two different roots signed at size ${head.size}`;
  } else if (head.size > held.size) {
    const response = await fetch(`/audit/consistency?old_size=${held.size}&new_size=${head.size}`,
      { credentials: "same-origin", headers: { Accept: "application/json" } });
    if (!response.ok) {
      say(null, `the history from size ${held.size} was not checked: the server answered ${response.status} to the consistency proof`);
      return true;
    }
    const proof = (await response.json()).proof.map(hexdecode);
    if (!(await consistent(held.size, head.size, heldRoot, head.root, proof))) {
      problem = `the history was rewritten: size ${head.size} is not consistent with size ${held.size}, which this browser verified`;
    }
  }
  if (problem) {
    keep(ALARM_KEY, { origin: head.origin, problem, pinned: held.note, shown: data.checkpoint,
                      time: new Date().toISOString() });
    showAlarm();
    say(false, problem);
    return false;
  }
  if (head.size > held.size) {
    remember();
    say(true, `the log extends the checkpoint of size ${held.size} this browser verified before (consistency proof checked)`);
  } else {
    say(true, `the same tree as the checkpoint this browser verified before`);
  }
  return true;
}

async function run(data) {
  const status = document.getElementById("verify-status");
  const steps = document.getElementById("verify-steps");
  const say = (ok, message) => {
    if (!steps) return;
    const li = document.createElement("li");
    li.className = ok === null ? "note" : ok ? "ok" : "failed";
    li.textContent = (ok === null ? "• " : ok ? "✓ " : "✗ ") + message;
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
    else {
      say(true, `checkpoint of ${head.origin}, tree size ${head.size}, signature verified with ${whose}`);
      if (!(await checkHistory(data, head, keyText, say))) ok = false;
    }
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
  showAlarm();
  const forget = document.getElementById("ledger-alarm-forget");
  if (forget) forget.addEventListener("click", () => { keep(ALARM_KEY, null); keep(HEAD_KEY, null); showAlarm(); });
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
