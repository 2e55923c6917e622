// The browser side of phivault's end-to-end encrypted sessions (docs/e2e.md).
//
// The invite link carries the session key in its fragment (#secret=…), which browsers
// never send. This script reads it, wipes the link from the address bar, and keeps the
// key only as a non-extractable CryptoKey in memory: it is never sent, logged or stored.
// The device identity is an Ed25519 key pair kept non-extractable in IndexedDB, so the
// same browser is the same device (and the same trial count) after a reload.
"use strict";

(() => {
  const ALGORITHM = "AES-256-GCM";
  const AAD_PREFIX = "phivault-e2e-v1";
  const CHALLENGE_PREFIX = "phivault-device-v1:";
  const KEY_LEN = 32;
  const NONCE_LEN = 12;
  const TAG_LEN = 16;
  const MAX_CIPHERTEXT = 64 * 1024;
  const MAX_PLAINTEXT = MAX_CIPHERTEXT - TAG_LEN;
  const PAGE_LIMIT = 500;
  // The server sends a comment every 15 seconds; three missed ones mean a dead connection.
  const STREAM_SILENCE_MS = 45000;
  // One SSE event holds at most one utterance (64 KiB of ciphertext as base64url in JSON).
  const SSE_BUFFER_MAX = 1024 * 1024;
  const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;
  const FINGERPRINT = /^[0-9a-f]{64}$/;
  const REFUSED_TEXT =
    "This message could not be verified, so it is not shown. It may have been altered.";

  const $ = (id) => document.getElementById(id);
  const ui = {
    status: $("status"),
    error: $("error"),
    conversation: $("conversation"),
    list: $("utterances"),
    form: $("composer"),
    message: $("message"),
    send: $("send"),
    sendStatus: $("send-status"),
  };

  // Read the link before anything else can run, then take it out of the address bar and
  // the history entry: the fragment holds the key, the query a single-use credential.
  const apiBase = new URL(".", location.href);
  const link = {
    token: new URLSearchParams(location.search).get("token"),
    secret: new URLSearchParams(location.hash.slice(1)).get("secret"),
  };
  history.replaceState(null, "", location.pathname);

  const state = {
    deviceToken: null,
    identity: null,
    publicKey: null,
    tenant: null,
    session: null,
    me: null,
    key: null,
    fingerprint: null,
    lastPosition: 0,
    ownSequence: 0,
    shown: new Map(),
    ready: false,
    ended: false,
    sending: false,
  };

  // --- presentation ----------------------------------------------------------------

  function setStatus(kind, text) {
    ui.status.dataset.state = kind;
    ui.status.textContent = text;
  }

  function showError(text) {
    ui.error.textContent = text;
    ui.error.hidden = false;
  }

  function clearError() {
    ui.error.textContent = "";
    ui.error.hidden = true;
  }

  function fail(text) {
    // Without a usable session nothing may be sent with this key: forget it.
    state.key = null;
    state.ready = false;
    setComposer(false);
    setStatus("error", "Could not open the secure session.");
    showError(text);
  }

  function setComposer(enabled) {
    const on = enabled && state.ready && !state.ended && !state.sending;
    ui.message.disabled = !(enabled && state.ready && !state.ended);
    ui.send.disabled = !on;
  }

  // --- encoding --------------------------------------------------------------------

  const B64URL = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
  const B64URL_VALUE = new Map([...B64URL].map((c, i) => [c, i]));

  function b64urlEncode(bytes) {
    let out = "";
    let i = 0;
    for (; i + 2 < bytes.length; i += 3) {
      const n = (bytes[i] << 16) | (bytes[i + 1] << 8) | bytes[i + 2];
      out += B64URL[n >> 18] + B64URL[(n >> 12) & 63] + B64URL[(n >> 6) & 63] + B64URL[n & 63];
    }
    const rest = bytes.length - i;
    if (rest === 1) {
      const n = bytes[i] << 16;
      out += B64URL[n >> 18] + B64URL[(n >> 12) & 63];
    } else if (rest === 2) {
      const n = (bytes[i] << 16) | (bytes[i + 1] << 8);
      out += B64URL[n >> 18] + B64URL[(n >> 12) & 63] + B64URL[(n >> 6) & 63];
    }
    return out;
  }

  // Strict, like the Rust side: no padding, no other alphabet, no stray trailing bits.
  function b64urlDecode(text) {
    if (typeof text !== "string" || text.length % 4 === 1) {
      throw new Error("not base64url");
    }
    const out = new Uint8Array(Math.floor((text.length * 3) / 4));
    let bits = 0;
    let acc = 0;
    let o = 0;
    for (const c of text) {
      const v = B64URL_VALUE.get(c);
      if (v === undefined) {
        throw new Error("not base64url");
      }
      acc = (acc << 6) | v;
      bits += 6;
      if (bits >= 8) {
        bits -= 8;
        out[o++] = (acc >> bits) & 255;
        acc &= (1 << bits) - 1;
      }
    }
    if (acc !== 0) {
      throw new Error("not canonical base64url");
    }
    return out;
  }

  function hex(buffer) {
    return Array.from(new Uint8Array(buffer), (b) => b.toString(16).padStart(2, "0")).join("");
  }

  const utf8 = (text) => new TextEncoder().encode(text);

  const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

  // --- the API -----------------------------------------------------------------------

  class ApiError extends Error {
    constructor(status, code, message, requestId, retryAfter) {
      super(message);
      this.status = status;
      this.code = code;
      this.requestId = requestId || null;
      this.retryAfter = retryAfter || null;
    }
  }

  async function errorFrom(response) {
    let body = null;
    try {
      body = await response.json();
    } catch {
      // Not phivault's JSON (a proxy's page): the status is all there is.
    }
    const code = body && typeof body.code === "string" ? body.code : `http_${response.status}`;
    const message =
      body && typeof body.message === "string" ? body.message : response.statusText || "error";
    return new ApiError(
      response.status,
      code,
      message,
      body && body.request_id,
      response.headers.get("retry-after"),
    );
  }

  function endpoint(path) {
    return new URL(path, apiBase);
  }

  function sessionPath(rest) {
    return `api/v1/tenants/${state.tenant}/e2e/sessions/${state.session}/${rest}`;
  }

  async function request(method, path, { token, body, accept, signal } = {}) {
    const headers = { Accept: accept || "application/json" };
    if (token) {
      headers.Authorization = `Bearer ${token}`;
    }
    if (body !== undefined) {
      headers["Content-Type"] = "application/json";
    }
    let response;
    try {
      response = await fetch(endpoint(path), {
        method,
        headers,
        body: body === undefined ? undefined : JSON.stringify(body),
        cache: "no-store",
        credentials: "omit",
        redirect: "error",
        referrerPolicy: "no-referrer",
        signal,
      });
    } catch (e) {
      if (signal && signal.aborted) {
        throw e;
      }
      throw new ApiError(0, "network", "The server could not be reached.");
    }
    if (!response.ok) {
      throw await errorFrom(response);
    }
    return response;
  }

  async function api(method, path, options) {
    const response = await request(method, path, options);
    try {
      return await response.json();
    } catch {
      throw new ApiError(response.status, "bad_response", "The server's answer was not JSON.");
    }
  }

  // A device token stops working when the same key registers again (another tab, say):
  // register once more and retry.
  async function asDevice(call) {
    try {
      return await call(state.deviceToken);
    } catch (e) {
      if (e instanceof ApiError && e.status === 401 && state.identity) {
        await register();
        return call(state.deviceToken);
      }
      throw e;
    }
  }

  const EXPLAIN = {
    network: "The server could not be reached. Check the connection and try again.",
    throttled: "Too many attempts from this network. Wait a little, then open the invite link again.",
    not_found: "This invite link is not valid. Ask the clinician for a new link.",
    invite_used:
      "This invite link has already been used; each link works once. Ask the clinician for a new link.",
    invite_expired:
      "This invite link has expired (links are valid for 15 minutes). Ask the clinician for a new link.",
    device_trial_exhausted:
      "This device has joined as many sessions as it is allowed to. Ask the clinician how to continue.",
    session_ended: "The session has ended; its messages were deleted from the server.",
    device_proof_invalid: "This device could not prove its identity to the server. Reload and try again.",
  };

  function describe(err) {
    if (!(err instanceof ApiError)) {
      return "Something went wrong on this page. Reload the invite link and try again.";
    }
    const base = EXPLAIN[err.code] || err.message;
    const extra = [err.code];
    if (err.retryAfter) {
      extra.push(`retry after ${err.retryAfter} s`);
    }
    if (err.requestId) {
      extra.push(`request ${err.requestId}`);
    }
    return `${base} [${extra.join(", ")}]`;
  }

  // --- device identity ---------------------------------------------------------------

  function idbOpen() {
    return new Promise((resolve, reject) => {
      const req = indexedDB.open("phivault-join", 1);
      req.onupgradeneeded = () => req.result.createObjectStore("device");
      req.onsuccess = () => resolve(req.result);
      req.onerror = () => reject(req.error);
      req.onblocked = () => reject(new Error("IndexedDB blocked"));
    });
  }

  function idb(db, mode, op) {
    return new Promise((resolve, reject) => {
      const tx = db.transaction("device", mode);
      const req = op(tx.objectStore("device"));
      tx.oncomplete = () => resolve(req.result);
      tx.onerror = () => reject(tx.error);
      tx.onabort = () => reject(tx.error);
    });
  }

  async function loadOrCreateIdentity() {
    let db = null;
    try {
      db = await idbOpen();
    } catch {
      // Private windows may refuse storage: a key for this visit only still works.
    }
    try {
      if (db) {
        const kept = await idb(db, "readonly", (s) => s.get("identity"));
        if (kept && kept.privateKey && kept.publicKey) {
          return kept;
        }
      }
      const pair = await crypto.subtle.generateKey({ name: "Ed25519" }, false, ["sign", "verify"]);
      const identity = { privateKey: pair.privateKey, publicKey: pair.publicKey };
      if (db) {
        try {
          await idb(db, "readwrite", (s) => s.add(identity, "identity"));
        } catch {
          // Another tab stored one first: use that, so both tabs are one device.
          const kept = await idb(db, "readonly", (s) => s.get("identity"));
          if (kept && kept.privateKey && kept.publicKey) {
            return kept;
          }
        }
      }
      return identity;
    } finally {
      if (db) {
        db.close();
      }
    }
  }

  async function register() {
    const challenge = await api("POST", "api/v1/devices/challenge", {
      body: { public_key: state.publicKey },
    });
    if (typeof challenge.challenge !== "string") {
      throw new ApiError(201, "bad_response", "The server sent no challenge.");
    }
    const signature = await crypto.subtle.sign(
      { name: "Ed25519" },
      state.identity.privateKey,
      utf8(CHALLENGE_PREFIX + challenge.challenge),
    );
    const registered = await api("POST", "api/v1/devices/register", {
      body: {
        public_key: state.publicKey,
        challenge: challenge.challenge,
        signature: b64urlEncode(new Uint8Array(signature)),
      },
    });
    if (typeof registered.device_token !== "string") {
      throw new ApiError(201, "bad_response", "The server sent no device token.");
    }
    state.deviceToken = registered.device_token;
  }

  // --- utterances ------------------------------------------------------------------

  function associatedData(sender, sequence) {
    return utf8(`${AAD_PREFIX}|${state.session}|${sender}|${sequence}`);
  }

  // The plaintext of a stored record, or null when anything about it does not
  // authenticate under this session's key. Refused bytes are never decoded or shown.
  async function open(record) {
    if (record.algorithm !== ALGORITHM || record.key_fingerprint !== state.fingerprint) {
      return null;
    }
    let nonce;
    let ciphertext;
    try {
      nonce = b64urlDecode(record.nonce);
      ciphertext = b64urlDecode(record.ciphertext);
    } catch {
      return null;
    }
    if (nonce.length !== NONCE_LEN || ciphertext.length <= TAG_LEN) {
      return null;
    }
    try {
      const plain = await crypto.subtle.decrypt(
        {
          name: "AES-GCM",
          iv: nonce,
          additionalData: associatedData(record.sender, record.sequence),
          tagLength: TAG_LEN * 8,
        },
        state.key,
        ciphertext,
      );
      return new TextDecoder("utf-8", { fatal: true }).decode(plain);
    } catch {
      return null;
    }
  }

  async function seal(sequence, plaintext) {
    const nonce = crypto.getRandomValues(new Uint8Array(NONCE_LEN));
    const ciphertext = await crypto.subtle.encrypt(
      {
        name: "AES-GCM",
        iv: nonce,
        additionalData: associatedData(state.me, sequence),
        tagLength: TAG_LEN * 8,
      },
      state.key,
      plaintext,
    );
    return {
      sequence,
      nonce: b64urlEncode(nonce),
      ciphertext: b64urlEncode(new Uint8Array(ciphertext)),
      key_fingerprint: state.fingerprint,
      algorithm: ALGORITHM,
    };
  }

  function place(item, text) {
    const mine = item.sender === state.me;
    const li = document.createElement("li");
    li.dataset.position = String(item.position);
    li.dataset.sender = item.sender;
    li.dataset.sequence = String(item.sequence);
    li.dataset.role = mine ? "you" : "clinician";
    li.dataset.state = text === null ? "refused" : "ok";
    const who = document.createElement("span");
    who.className = "who";
    who.textContent = mine ? "You" : "Clinician";
    const body = document.createElement("span");
    body.className = "text";
    body.textContent = text === null ? REFUSED_TEXT : text;
    li.append(who, body);
    let before = null;
    for (const other of ui.list.children) {
      if (Number(other.dataset.position) > item.position) {
        before = other;
        break;
      }
    }
    ui.list.insertBefore(li, before);
    state.shown.set(item.position, li);
    if (!before) {
      li.scrollIntoView({ block: "nearest" });
    }
  }

  async function receive(record) {
    if (
      !record ||
      !Number.isSafeInteger(record.position) ||
      record.position < 1 ||
      !Number.isSafeInteger(record.sequence) ||
      record.sequence < 1 ||
      typeof record.sender !== "string" ||
      !UUID.test(record.sender)
    ) {
      throw new ApiError(200, "bad_response", "The server sent a malformed utterance.");
    }
    state.lastPosition = Math.max(state.lastPosition, record.position);
    if (record.sender === state.me) {
      // The server orders every sender's sequence, authentic or not.
      state.ownSequence = Math.max(state.ownSequence, record.sequence);
    }
    if (state.shown.has(record.position)) {
      return;
    }
    place(record, await open(record));
  }

  async function readStored(after) {
    let cursor = after;
    for (;;) {
      const query = `utterances?after=${cursor}&limit=${PAGE_LIMIT}`;
      const page = await asDevice((token) => api("GET", sessionPath(query), { token }));
      if (!page || !Array.isArray(page.items)) {
        throw new ApiError(200, "bad_response", "The server sent a malformed page.");
      }
      for (const item of page.items) {
        await receive(item);
      }
      const next = page.next_after;
      if (!Number.isSafeInteger(next) || next <= cursor || page.items.length === 0) {
        return;
      }
      cursor = next;
    }
  }

  // --- the live stream -----------------------------------------------------------------

  // EventSource cannot send an Authorization header, so the stream is read by hand.
  class SseParser {
    constructor() {
      this.pending = "";
      this.event = "";
      this.data = [];
    }

    feed(chunk) {
      const text = this.pending + chunk;
      const events = [];
      let index = 0;
      for (;;) {
        const lf = text.indexOf("\n", index);
        const cr = text.indexOf("\r", index);
        let end;
        let next;
        if (cr !== -1 && (lf === -1 || cr < lf)) {
          if (cr === text.length - 1) {
            break; // maybe the first half of CRLF
          }
          end = cr;
          next = text[cr + 1] === "\n" ? cr + 2 : cr + 1;
        } else if (lf !== -1) {
          end = lf;
          next = lf + 1;
        } else {
          break;
        }
        this.line(text.slice(index, end), events);
        index = next;
      }
      this.pending = text.slice(index);
      if (this.pending.length > SSE_BUFFER_MAX) {
        throw new ApiError(200, "bad_response", "The server sent an oversized event.");
      }
      return events;
    }

    line(line, events) {
      if (line === "") {
        if (this.data.length > 0) {
          events.push({ event: this.event || "message", data: this.data.join("\n") });
        }
        this.event = "";
        this.data = [];
        return;
      }
      if (line.startsWith(":")) {
        return;
      }
      const colon = line.indexOf(":");
      const field = colon === -1 ? line : line.slice(0, colon);
      let value = colon === -1 ? "" : line.slice(colon + 1);
      if (value.startsWith(" ")) {
        value = value.slice(1);
      }
      if (field === "event") {
        this.event = value;
      } else if (field === "data") {
        this.data.push(value);
      }
    }
  }

  async function streamOnce() {
    const abort = new AbortController();
    let watchdog = setTimeout(() => abort.abort(), STREAM_SILENCE_MS);
    const alive = () => {
      clearTimeout(watchdog);
      watchdog = setTimeout(() => abort.abort(), STREAM_SILENCE_MS);
    };
    try {
      const response = await asDevice((token) =>
        request("GET", sessionPath(`stream?after=${state.lastPosition}`), {
          token,
          accept: "text/event-stream",
          signal: abort.signal,
        }),
      );
      const type = response.headers.get("content-type") || "";
      if (!type.startsWith("text/event-stream")) {
        throw new ApiError(response.status, "bad_response", "The stream is not an event stream.");
      }
      if (state.ready && !state.ended) {
        setStatus("ready", "Connected. Messages are end-to-end encrypted.");
      }
      const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
      const parser = new SseParser();
      for (;;) {
        const { value, done } = await reader.read();
        if (done) {
          return;
        }
        alive();
        for (const event of parser.feed(value)) {
          if (event.event === "utterance") {
            let record;
            try {
              record = JSON.parse(event.data);
            } catch {
              throw new ApiError(200, "bad_response", "The server sent a malformed event.");
            }
            await receive(record);
          } else if (event.event === "end") {
            sessionEnded();
            reader.cancel().catch(() => {});
            return;
          }
        }
      }
    } finally {
      clearTimeout(watchdog);
    }
  }

  async function follow() {
    let delay = 1000;
    while (!state.ended && state.key) {
      try {
        await streamOnce();
        delay = 1000;
      } catch (e) {
        if (e instanceof ApiError && e.code === "session_ended") {
          sessionEnded();
          return;
        }
        if (e instanceof ApiError && (e.status === 403 || e.status === 404)) {
          fail(describe(e));
          return;
        }
      }
      if (state.ended || !state.key) {
        return;
      }
      setStatus("reconnecting", "The connection was interrupted; reconnecting…");
      await sleep(delay);
      delay = Math.min(delay * 2, 30000);
    }
  }

  function sessionEnded() {
    state.ended = true;
    setComposer(false);
    setStatus("ended", "The session has ended; its messages were deleted from the server.");
  }

  // --- sending -------------------------------------------------------------------------

  async function send() {
    const text = ui.message.value;
    if (!state.ready || state.ended || state.sending || text.trim() === "") {
      return;
    }
    const plaintext = utf8(text);
    if (plaintext.length > MAX_PLAINTEXT) {
      ui.sendStatus.textContent = "This message is too long; split it into shorter ones.";
      return;
    }
    state.sending = true;
    setComposer(true);
    ui.sendStatus.textContent = "Encrypting and sending…";
    try {
      let caughtUp = false;
      for (;;) {
        const sequence = state.ownSequence + 1;
        const body = await seal(sequence, plaintext);
        try {
          const stored = await asDevice((token) =>
            api("POST", sessionPath("utterances"), { token, body }),
          );
          state.ownSequence = Math.max(state.ownSequence, stored.sequence || sequence);
          if (Number.isSafeInteger(stored.position) && !state.shown.has(stored.position)) {
            place({ position: stored.position, sender: state.me, sequence }, text);
          }
          break;
        } catch (e) {
          // Another tab of this device sent meanwhile: catch up once and seal again.
          if (!caughtUp && e instanceof ApiError && e.code === "sequence_not_increasing") {
            caughtUp = true;
            await readStored(0);
            continue;
          }
          throw e;
        }
      }
      ui.message.value = "";
      ui.sendStatus.textContent = "Sent.";
      clearError();
    } catch (e) {
      if (e instanceof ApiError && e.code === "session_ended") {
        sessionEnded();
      }
      ui.sendStatus.textContent = "Not sent.";
      showError(describe(e));
    } finally {
      plaintext.fill(0);
      state.sending = false;
      setComposer(true);
    }
  }

  ui.form.addEventListener("submit", (event) => {
    event.preventDefault();
    send();
  });
  ui.message.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      send();
    }
  });

  // --- start -----------------------------------------------------------------------------

  async function start() {
    const { token, secret } = link;
    link.token = null;
    link.secret = null;
    if (!token || !secret) {
      fail(
        "No invite in the address. Open the whole invite link you were given (it ends in " +
          "#secret=…). Reloading cannot work: this page removes the link from the address " +
          "bar as soon as it has read it.",
      );
      return;
    }
    if (!window.isSecureContext || !window.crypto || !crypto.subtle || !window.indexedDB) {
      fail("This page must be opened over HTTPS in a current browser to encrypt messages.");
      return;
    }
    let raw;
    try {
      raw = b64urlDecode(secret);
    } catch {
      raw = null;
    }
    if (!raw || raw.length !== KEY_LEN) {
      fail("The secret in this link is damaged (was it copied only in part?). Ask for a new link.");
      return;
    }
    try {
      const once = await crypto.subtle.digest("SHA-256", raw);
      state.fingerprint = hex(await crypto.subtle.digest("SHA-256", once));
      state.key = await crypto.subtle.importKey("raw", raw, { name: "AES-GCM" }, false, [
        "encrypt",
        "decrypt",
      ]);
    } finally {
      raw.fill(0);
    }

    setStatus("device", "Preparing this device…");
    try {
      state.identity = await loadOrCreateIdentity();
    } catch {
      fail("This browser cannot create a device key (Ed25519). Use a current browser.");
      return;
    }
    state.publicKey = b64urlEncode(
      new Uint8Array(await crypto.subtle.exportKey("raw", state.identity.publicKey)),
    );

    setStatus("joining", "Joining the session…");
    let joined;
    try {
      await register();
      joined = await asDevice((t) => api("POST", "api/v1/e2e/join", { token: t, body: { token } }));
    } catch (e) {
      fail(describe(e));
      return;
    }
    if (
      !joined ||
      !UUID.test(joined.tenant_id) ||
      !UUID.test(joined.session_id) ||
      !UUID.test(joined.participant_id) ||
      !FINGERPRINT.test(joined.key_fingerprint)
    ) {
      fail("The server's answer to the join was not understood.");
      return;
    }
    if (joined.algorithm !== ALGORITHM) {
      fail(`This session uses ${joined.algorithm}, which this page does not support.`);
      return;
    }
    // A link whose secret was altered, or belongs to another session, would make
    // messages nobody else can read.
    if (joined.key_fingerprint !== state.fingerprint) {
      fail("The secret in this link does not belong to this session. Ask for a new link.");
      return;
    }
    state.tenant = joined.tenant_id;
    state.session = joined.session_id;
    state.me = joined.participant_id;

    setStatus("loading", "Loading messages…");
    ui.conversation.hidden = false;
    try {
      await readStored(0);
    } catch (e) {
      fail(describe(e));
      return;
    }
    state.ready = true;
    setComposer(true);
    setStatus("ready", "Connected. Messages are end-to-end encrypted.");
    follow();
  }

  start().catch((e) => fail(describe(e)));
})();
