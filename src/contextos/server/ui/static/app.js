// contextos inspector: plain JavaScript, no build step, no dependencies.
// Stored text is hostile input: it only ever reaches the page through textContent,
// input values and element construction (never an HTML-parsing sink).
"use strict";

const KEY = "contextos_key";
const PAGE = 50;
const params = new URLSearchParams(location.search);
const view = ["memories", "sessions", "cache"].includes(params.get("view"))
  ? params.get("view")
  : "memories";

const $ = (id) => document.getElementById(id);

// The search query of a link: in the URL's fragment (#q=...), which the browser never
// sends, so a query (often words of a memory's text) is not in the server's access log
// on a reload or a shared link (a review). A link with ?q= (before) still opens its search;
// the query then moves to the fragment.
const linkedQuery = new URLSearchParams(location.hash.slice(1)).get("q") || params.get("q");

function el(tag, text, cls) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  if (cls) node.className = cls;
  return node;
}

function row(cells) {
  const tr = document.createElement("tr");
  for (const cell of cells) {
    const td = document.createElement("td");
    if (cell instanceof Node) td.appendChild(cell);
    else td.textContent = cell === null || cell === undefined ? "" : String(cell);
    tr.appendChild(td);
  }
  return tr;
}

function button(text, onClick, cls) {
  const b = el("button", text, cls);
  b.type = "button";
  b.addEventListener("click", onClick);
  return b;
}

// Each message shown is numbered (`errorsShown`), so that data that arrives clears only a
// message shown before it was asked for (`request`'s `clearEarlierError`). One shown
// meanwhile is about something newer and stays: a list reloaded after one Save wiped the
// "metadata must be a JSON object" of the next, and a refused Delete's message came back
// after the memory was deleted by a second try (a review).
let errorsShown = 0;

function showError(message) {
  const box = $("error");
  box.textContent = message || "";
  box.hidden = !message;
  if (message) errorsShown += 1;
}

function rendered() {
  // What the browser test waits for, and the end of the "time to data" measure.
  performance.mark("ui:data");
  document.documentElement.dataset.rendered = view;
}

// Set while a view draws itself from the page's URL (its load, and so also Back and
// Forward, which load the page again: see the boot code): the URL it settles on then
// replaces the entry. Later, a URL that changes (a page of the list, a search, a session
// opened) is a new entry of the history: every change replaced the one entry, so Back
// after five pages of "older" left the view (a review); a list drawn again is not.
let booting = true;
// The URL of what the page shows (see the boot code's popstate).
let shownUrl = location.href;

function setUrl(updates) {
  const p = new URLSearchParams(location.search);
  const h = new URLSearchParams(location.hash.slice(1));
  p.delete("q");  // never in the query (see `linkedQuery`)
  for (const [k, v] of Object.entries(updates)) {
    const into = k === "q" ? h : p;
    if (v === null || v === undefined || v === "") into.delete(k);
    else into.set(k, String(v));
  }
  const hash = h.toString();
  const url = "/ui?" + p.toString() + (hash ? "#" + hash : "");
  if (booting || url === location.pathname + location.search + location.hash) {
    history.replaceState(null, "", url);
  } else history.pushState(null, "", url);
  shownUrl = location.href;
  navLinks(p.get("user_id"));
}

// The nav links to each view, for user `user` (the one the URL names): set once from the
// first URL, they went to the user the page was opened with, not the one shown (a review).
function navLinks(user) {
  const keep = query({ user_id: user });
  for (const a of document.querySelectorAll("#nav a")) {
    a.href = "/ui?view=" + a.dataset.view + (keep ? "&" + keep : "");
  }
}

class ApiError extends Error {
  constructor(status, body) {
    super((body && body.error && body.error.message) || "HTTP " + status);
    this.status = status;
  }
}

// What the page says when a request got no answer at all.
const UNREACHABLE = "The server did not answer (it may be stopped, or the network is down), "
  + "so what the page shows may be out of date. Try again.";
// ... and when the answer of a request that succeeded could not be read: cut off on the
// way, or not contextos's JSON (a proxy's login page): it was a TypeError on screen.
const UNREADABLE = "The server's answer was cut off or was not JSON (a dropped connection, a "
  + "restarting server, or a proxy in front of it), so what the page shows may be out of date. Try again.";

// The seconds a 429 or 503 asks to wait (its Retry-After: seconds, or an HTTP date), or null.
function retryAfter(resp) {
  const value = (resp.headers.get("Retry-After") || "").trim();
  if (!value) return null;
  if (/^\d+$/.test(value)) return parseInt(value, 10);
  const at = Date.parse(value);
  return Number.isNaN(at) ? null : Math.max(0, Math.ceil((at - Date.now()) / 1000));
}

// The message of an error answer: the server's own (JSON), with how long to wait for a
// 429; an answer with none (a proxy's 502 page) is named by its status.
function errorMessage(resp, body) {
  const own = body && body.error && body.error.message;
  if (resp.status === 429) {
    const wait = retryAfter(resp);
    const later = wait === null ? "wait a little and try again" : "try again in " + wait + " s";
    // The server counts failed key checks by the client's address, before it reads any
    // key: a valid key from that address waits too. It was "for this key" (a review).
    if (own && /failed authentications/.test(own)) {
      return "Too many failed sign-ins from this browser's network address (every client at "
        + "it counts, e.g. all those behind one proxy), so no key is checked from it for now: "
        + later + ".";
    }
    return "Too many requests for this key: " + later + (own ? " (the server said: " + own + ")." : ".");
  }
  if (own) return own;
  return "The server (or a proxy in front of it) answered HTTP " + resp.status
    + (resp.statusText ? " " + resp.statusText : "") + " with no message from contextos, "
    + "so what the page shows may be out of date. Try again.";
}

// An answer (or error) for a request that is no longer its panel's newest: dropped, never
// shown (see `request`).
class Stale extends Error {}

// The newest request of each panel (the memory list, a memory, a session's turns...).
const newest = {};

// A new request of `panel`, which makes any earlier one of it stale. Returns a function
// that awaits the request's answer and throws Stale, instead of its answer or its error,
// when a newer request of the panel was made meanwhile: a slow answer must not be drawn
// into the view the user has moved on to (session `long`'s next page of turns into
// session `short`'s table).
//
// Its `clearEarlierError()`, called once the answer is drawn, hides the message on screen
// if it was shown before this request was made (see `showError`).
function request(panel) {
  const token = {};
  newest[panel] = token;
  const current = () => newest[panel] === token;
  const mark = errorsShown;
  const awaiting = (pending) => Promise.resolve(pending).then(
    (answer) => {
      if (!current()) throw new Stale();
      return answer;
    },
    (err) => {
      throw current() ? err : new Stale();
    },
  );
  awaiting.clearEarlierError = () => {
    if (errorsShown === mark) showError("");
  };
  return awaiting;
}

// Makes the pending request of `panel` stale (what it was for is no longer shown).
function drop(panel) {
  delete newest[panel];
}

// JSON numbers are doubles here, the server's integers are not: an integer past 2^53
// would read back rounded (9007199254740993 -> ...992). Where the browser can, such an
// integer is kept as its source text (JSON.rawJSON), so showing it (JSON.stringify) shows
// the stored digits. The edit panel does not rely on this: it keeps the server's text.
function exactNumbers(key, value, context) {
  if (typeof value === "number" && !Number.isSafeInteger(value) && context && typeof JSON.rawJSON === "function" &&
      /^-?\d+$/.test(context.source)) return JSON.rawJSON(context.source);
  return value;
}

// options.body: a value sent as JSON; options.json: JSON text sent as it is (to keep a
// user's digits exact); options.raw: also return the response's text, as [body, text].
async function api(path, options = {}) {
  const key = sessionStorage.getItem(KEY);
  const headers = { Authorization: "Bearer " + key };
  const payload = options.json !== undefined ? options.json
    : options.body === undefined ? undefined : JSON.stringify(options.body);
  if (payload !== undefined) headers["Content-Type"] = "application/json";
  let req;
  try {
    req = new Request(path, { method: options.method || "GET", headers, body: payload, credentials: "omit",
      cache: "no-store" });
  } catch (err) {
    // Only the key can make the request unbuildable: a character a header cannot carry
    // (one past U+00FF, such as a pasted U+2026), stored before sign-in checked keys.
    // Refused like a 401, or the page would fail the same way on every load.
    if (!(err instanceof TypeError)) throw err;
    refuse("The stored key holds a character an HTTP header cannot carry: sign in again.");
  }
  let resp;
  try {
    resp = await fetch(req);
  } catch (err) {
    // fetch answers a TypeError whatever went wrong on the way ("Failed to fetch"): the
    // server stopped, the network is down, the connection was cut. Said plainly, with
    // what it means for the page (a review).
    if (!(err instanceof TypeError)) throw err;
    if (sessionStorage.getItem(KEY) !== key) throw new ApiError(401, null);
    throw new ApiError(0, { error: { message: UNREACHABLE } });
  }
  // An answer for a key that is no longer this tab's (refused or signed out meanwhile)
  // is dropped: it must not reach a page shown to whoever signs in next.
  if (sessionStorage.getItem(KEY) !== key) throw new ApiError(401, null);
  if (resp.status === 401) refuse("The key was refused: sign in again.");
  // A body cut off on the way, or one that is not JSON, is null: an error answer is then
  // named by its status, and a success is an error (each caller reads the answer's fields).
  let text = null;
  try {
    text = await resp.text();
  } catch (err) {
    text = null;
  }
  let body = null;
  try {
    body = text === null ? null : JSON.parse(text, exactNumbers);
  } catch (err) {
    body = null;
  }
  // The admin key is refused by every route the page reads (403): it was kept, and each
  // view said so with the page's controls still up and no way to another key but Sign
  // out (a review). It is dropped, as a refused key is, and the form says which key to use.
  const own = body && body.error && body.error.message;
  if (resp.status === 403 && typeof own === "string" && own.startsWith("the admin key manages keys only")) {
    refuse("That is the server's admin key, which manages keys only: sign in with a tenant's key.");
  }
  if (!resp.ok) throw new ApiError(resp.status, { error: { message: errorMessage(resp, body) } });
  if (body === null || typeof body !== "object") throw new ApiError(0, { error: { message: UNREADABLE } });
  return options.raw ? [body, text] : body;
}

// -- JSON source text -------------------------------------------------------------------
// The edit panel shows and sends metadata as the server's own JSON text, never a value
// parsed into doubles and written out again, so what the user does not edit stays exact.

function skipSpace(src, i) {
  while (i < src.length && " \t\n\r".includes(src[i])) i++;
  return i;
}

// Where the JSON value starting at src[i] ends (src is valid JSON: JSON.parse read it).
function valueEnd(src, i) {
  if (src[i] === '"') {
    i++;
    while (i < src.length && src[i] !== '"') i += src[i] === "\\" ? 2 : 1;
    return i + 1;
  }
  if (src[i] === "{" || src[i] === "[") {
    let depth = 0;
    for (; i < src.length; i++) {
      const c = src[i];
      if (c === '"') i = valueEnd(src, i) - 1;
      else if (c === "{" || c === "[") depth++;
      else if ((c === "}" || c === "]") && --depth === 0) return i + 1;
    }
    return i;
  }
  while (i < src.length && !",}] \t\n\r".includes(src[i])) i++;
  return i;
}

// The source text of member `name` of the JSON object `src`, or null.
function rawMember(src, name) {
  let i = skipSpace(src, 0);
  if (src[i] !== "{") return null;
  i = skipSpace(src, i + 1);
  while (src[i] === '"') {
    const keyEnd = valueEnd(src, i);
    const key = JSON.parse(src.slice(i, keyEnd));
    const start = skipSpace(src, skipSpace(src, keyEnd) + 1);  // past the ':'
    const end = valueEnd(src, start);
    if (key === name) return src.slice(start, end);
    i = skipSpace(src, end);
    if (src[i] === ",") i = skipSpace(src, i + 1);
  }
  return null;
}

// JSON text laid out one member per line; every string and number is copied as written.
function indentJson(src) {
  let out = "";
  let depth = 0;
  const line = () => "\n" + " ".repeat(depth);
  for (let i = 0; i < src.length; i++) {
    const c = src[i];
    if (c === '"') {
      const end = valueEnd(src, i);
      out += src.slice(i, end);
      i = end - 1;
    } else if (c === "{" || c === "[") {
      const next = skipSpace(src, i + 1);
      if (src[next] === (c === "{" ? "}" : "]")) {
        out += c + src[next];
        i = next;
      } else {
        depth++;
        out += c + line();
      }
    } else if (c === "}" || c === "]") {
      depth--;
      out += line() + c;
    } else if (c === ",") out += "," + line();
    else if (c === ":") out += ": ";
    else if (!" \t\n\r".includes(c)) out += c;
  }
  return out;
}

function query(obj) {
  const p = new URLSearchParams();
  for (const [k, v] of Object.entries(obj)) if (v !== null && v !== undefined && v !== "") p.set(k, v);
  return p.toString();
}

function when(iso) {
  return iso ? iso.replace("T", " ").replace(/\.\d+/, "").replace("+00:00", "Z") : "";
}

// -- sign-in --------------------------------------------------------------------------

// Everything a tenant's data is put into: emptied when its key goes (refused or signed
// out), so nothing of it stays in the page, shown or hidden, for whoever signs in next.
const FILLED = ["mem-head", "mem-rows", "mem-status", "page-info", "d-id", "d-fields", "history-rows",
  "forget-user", "session-list", "s-id", "turn-rows", "w-summary", "w-strip", "w-legend", "block-rows",
  "leftout-rows", "cache-sessions", "c-id", "c-summary", "call-rows", "who"];
const TYPED = ["f-user", "f-agent", "f-session", "f-query", "d-text", "d-meta", "forget-confirm-input",
  "s-user", "w-question", "c-user"];
const SHOWN = ["view-memories", "view-sessions", "view-cache", "nav", "signout", "memories", "pager", "detail",
  "forget", "history-more", "session-detail", "turns-more", "window-out", "cache-detail", "session-list-more",
  "cache-sessions-more"];

function clearData() {
  for (const id of FILLED) $(id).replaceChildren();
  for (const id of TYPED) $(id).value = "";
  bidiNotes();
  for (const id of SHOWN) $(id).hidden = true;
  $("c-chart").removeAttribute("src");
  if (chartUrl) URL.revokeObjectURL(chartUrl);
  chartUrl = null;
}

// Drops the key and brings the sign-in form back.
function refuse(message) {
  sessionStorage.removeItem(KEY);
  showSignin(message);
  throw new ApiError(401, null);
}

function showSignin(message) {
  clearData();
  $("signin").hidden = false;
  showError(message);
  $("key").focus();
}

// A character as its code point: "U+200B".
function codePoint(c) {
  return "U+" + c.codePointAt(0).toString(16).toUpperCase().padStart(4, "0");
}

// Keys are printable ASCII (ctx_ and URL-safe base64). Where a pasted key holds anything
// else (a zero-width space, "…"), as "U+200B at character 9", else null: the browser
// cannot send a character past U+00FF in a header at all, and no key has one.
function badKeyChar(key) {
  const chars = [...key];
  const i = chars.findIndex((c) => c < "!" || c > "~");
  return i < 0 ? null : codePoint(chars[i]) + " at character " + (i + 1);
}

function signIn(event) {
  event.preventDefault();
  const key = $("key").value.trim();
  if (!key) return;
  const bad = badKeyChar(key);
  if (bad) {
    showError("That is not an API key: keys are printable ASCII, and this one holds " + bad + ". Paste it again.");
    return;
  }
  sessionStorage.setItem(KEY, key);
  $("key").value = "";
  // A fresh page for the new key (the link it was on stays): nothing of an earlier key's
  // page, its pending requests or its state carries over.
  location.reload();
}

function signOut() {
  sessionStorage.removeItem(KEY);
  location.assign("/ui");
}

async function start() {
  $("signin").hidden = true;
  showError("");
  $("nav").hidden = false;
  $("signout").hidden = false;
  navLinks(params.get("user_id"));
  for (const a of document.querySelectorAll("#nav a")) {
    if (a.dataset.view !== view) continue;
    a.className = "current";
    a.setAttribute("aria-current", "page");
  }
  $("view-" + view).hidden = false;
  const views = { memories: startMemories, sessions: startSessions, cache: startCache };
  wire[view]();  // once: start runs once a page (a sign-in loads the page again)
  document.addEventListener("input", (e) => {
    if (BIDI_BOXES.includes(e.target.id)) bidiNote(e.target.id);
  });
  // The data first; who is signed in is shown after it (also when the user moved on
  // before the first data came, which made it stale).
  await views[view]().catch((err) => {
    if (!(err instanceof Stale)) throw err;
  });
  const me = await api("/ui/api/whoami");
  $("who").replaceChildren("tenant: ", idNode(me.tenant));
}

const wire = { memories: wireMemories, sessions: wireSessions, cache: wireCache };

// -- memories -------------------------------------------------------------------------

// `after`: the key of the memory the page shown starts after (the server's `next_after` of
// the page before; null: the page at `offset`). Paged by key, "older" holds only memories
// after the last one shown, whatever was written meanwhile: paged by offset under a clock
// time it began with the page before's last row again (a review). `offset` only numbers
// the rows. `back`: the pages "older" started from ({offset, after}), newest last; "newer"
// goes back to the last. `listing`: the scope and filters `back` is of. `paged`: those
// `offset` and `after` are of. `query`: the query of the search shown (null: the list is
// shown), which a save or delete runs again. `fields`: the form's fields (FIELDS) the list
// or search shown was asked with.
const mem = { offset: 0, after: null, total: 0, scope: {}, back: [], listing: "", paged: "", query: null,
  fields: null };

// The form's fields a list or search is of (the query box aside).
const FIELDS = ["f-user", "f-agent", "f-session", "f-type", "f-validity"];

function formFields() {
  return Object.fromEntries(FIELDS.map((id) => [id, $(id).value]));
}

// Puts the fields of the list or search shown back into the form. What is drawn again
// after a write, and "older" and "newer", are of what is shown, not of an id or a filter
// typed since and not submitted: a Save drew bob's memories after the key of ana's
// page 2, numbered "51–60", with the URL and the forget box on bob (a review).
function restoreForm() {
  if (mem.fields) for (const [id, value] of Object.entries(mem.fields)) $(id).value = value;
  bidiNotes();
}

// An id as typed: the library keeps spaces as part of an id ("ana " is not "ana"), so
// nothing is trimmed; only a field of nothing but blanks counts as empty.
function idOf(inputId) {
  const value = $(inputId).value;
  return value.trim() ? value : "";
}

function scopeFromForm() {
  return { user_id: idOf("f-user"), agent_id: idOf("f-agent"), session_id: idOf("f-session") };
}

function isScoped(scope) {
  return Boolean(scope.user_id || scope.agent_id || scope.session_id);
}

async function startMemories() {
  $("f-user").value = params.get("user_id") || "";
  $("f-agent").value = params.get("agent_id") || "";
  $("f-session").value = params.get("session_id") || "";
  $("f-type").value = params.get("memory_type") || "";
  $("f-validity").value = params.get("validity") === "all" ? "all" : "current";
  $("f-query").value = linkedQuery || "";
  bidiNotes();
  const offset = Math.max(0, parseInt(params.get("offset") || "0", 10) || 0);
  if ($("f-query").value) await searchMemories();
  else {
    const after = params.get("after") || null;
    await loadMemories(offset, null, after).catch(async (err) => {
      // A link's `after` the server does not know (hand-edited, cut short): its first page.
      if (!after || !(err instanceof ApiError) || err.status !== 422 || !err.message.startsWith("query.after")) throw err;
      await loadMemories(0);
      showError("The link's page (its after=) is not a page of this list: the list is shown from its first page.");
    });
  }
}

function wireMemories() {
  $("scope-form").addEventListener("submit", (e) => {
    e.preventDefault();
    $("f-query").value = "";
    bidiNote("f-query");
    loadMemories(0).catch(fail);
  });
  $("search-form").addEventListener("submit", (e) => {
    e.preventDefault();
    searchMemories().catch(fail);
  });
  $("search-clear").addEventListener("click", () => {
    $("f-query").value = "";
    bidiNote("f-query");
    loadMemories().catch(fail);
  });
  // "older": the page after the last memory shown (the server's key of it). "newer" goes
  // back to where the page before began (to the first page for a page opened from a
  // link, with no page before).
  $("prev").addEventListener("click", () => {
    const back = mem.back.length ? mem.back[mem.back.length - 1] : { offset: 0, after: null };
    restoreForm();
    loadMemories(back.offset, "newer", back.after).catch(fail);
  });
  $("next").addEventListener("click", () => {
    restoreForm();
    loadMemories(mem.nextOffset, "older", mem.next).catch(fail);
  });
  $("d-close").addEventListener("click", closeMemory);
  $("detail").addEventListener("keydown", (e) => {
    if (e.key === "Escape" && !$("detail").hidden) closeMemory();
  });
  $("history-more").addEventListener("click", () => moreHistory().catch(fail));
  $("forget-confirm-input").addEventListener("input", enableButtons);
  $("forget-button").addEventListener("click", () => whileBusy("forget-button", forgetUser).catch(fail));
}

// A refused key has brought the sign-in form back, and a stale answer is for a view no
// longer shown: neither is an error to show.
function fail(err) {
  if (err && err.status !== 401 && !(err instanceof Stale)) showError(err.message);
}

function head(names) {
  const tr = $("mem-head");
  tr.replaceChildren(...names.map((n) => el("th", n)));
}

// Characters that do not show, or show as a plain space, and so would make ids that
// differ only by them look the same: controls, format and other default-ignorable
// characters (U+200B, U+2060, U+FEFF, U+202E...), every space but U+0020, U+2800. A
// U+0020 counts too at either end of an id and where two or more are in a row.
const UNSEEN = /[\p{Cc}\p{Default_Ignorable_Code_Point}\p{Z}\u2800]/u;

// An unseen character, marked: the stylesheet draws the mark's label (data-mark: "U+200B",
// or "␣" for a space) and gives the character itself no width. The character stays in
// the text, so the id's text, and a copy of it, is the id exactly.
function mark(c) {
  const span = el("span", c, "mark");
  span.dataset.mark = c === " " ? "␣" : codePoint(c);
  return span;
}

// The text of an id as nodes: runs of plain text, each unseen character marked.
function idParts(id) {
  const chars = [...String(id)];
  const parts = [];
  let run = "";
  chars.forEach((c, i) => {
    const lone = c === " " && i > 0 && i < chars.length - 1 && chars[i - 1] !== " " && chars[i + 1] !== " ";
    if (lone || !UNSEEN.test(c)) {
      run += c;
      return;
    }
    if (run) parts.push(run);
    run = "";
    parts.push(mark(c));
  });
  if (run) parts.push(run);
  return parts;
}

// A user-given id as the page shows it, everywhere (lists, headings, scope cells, the
// forget box): isolated (<bdi>), so that right-to-left text or an override character in
// it (U+202E) cannot reorder the line around it, and with its unseen characters marked.
// Built of text nodes and elements only, never parsed.
function idNode(id) {
  const node = el("bdi", undefined, "wrap");
  node.append(...idParts(id));
  return node;
}

// Ids in a line, each as idNode, with `sep` between them.
function isolated(items, sep) {
  const line = el("span", undefined, "wrap");
  items.forEach((item, i) => line.append(...(i ? [sep] : []), idNode(item)));
  return line;
}

function scopeCell(r) {
  const cell = el("span", undefined, "wrap");
  for (const [label, id] of [["user", r.user_id], ["agent", r.agent_id], ["session", r.session_id]]) {
    if (!id) continue;
    cell.append(...(cell.childNodes.length ? [" · "] : []), label + " ", idNode(id));
  }
  return cell;
}

function validity(r) {
  if (r.valid_to) return el("span", "ended " + when(r.valid_to), "badge ended");
  return el("span", "current", "badge");
}

// Bidi formatting characters, shown escaped in the one-line metadata JSON (where they
// could only be inside strings): an override in one value would reorder the whole line.
const BIDI_CONTROLS = /[\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]/g;

// JSON text with its bidi controls as \uXXXX escapes: the same JSON value, shown as it is.
function escapeBidi(json) {
  return json.replace(BIDI_CONTROLS, (c) => "\\u" + c.charCodeAt(0).toString(16).padStart(4, "0"));
}

// Stored text (a memory's, a history event's, a turn's, a window block's) as nodes: runs
// of plain text, each bidi control (and control character) marked as in ids (`mark`: in its own isolate, so it
// reorders nothing). Drawn raw, "Ana is allergic to \u202estunaep" showed as "...peanuts",
// which is not what the model reads nor what keyword search matches (a review). The
// character stays in the text: a copy is exact.
// Marked in stored text besides the bidi controls: control characters other than tab and
// line breaks (an ESC drew nothing, so "\x1b[31mRED" showed as "[31mRED"; a review).
const STORED_MARKED = /[\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069\u0000-\u0008\u000b\u000c\u000e-\u001f\u007f-\u009f]/g;

function storedParts(text) {
  const s = text === null || text === undefined ? "" : String(text);
  // A text of unseen characters only (zero-width spaces) drew a blank cell: marked as an
  // id's are, each character (a review).
  if (s && [...s].every((c) => UNSEEN.test(c))) return [...s].map(mark);
  const parts = [];
  let from = 0;
  for (const m of s.matchAll(STORED_MARKED)) {
    if (m.index > from) parts.push(s.slice(from, m.index));
    parts.push(mark(m[0]));
    from = m.index + m[0].length;
  }
  if (from < s.length) parts.push(s.slice(from));
  return parts;
}

// An element `tag` of class `cls` holding stored text (see `storedParts`).
function stored(tag, text, cls) {
  const node = el(tag, undefined, cls);
  node.append(...storedParts(text));
  return node;
}

// The boxes a value with bidi controls can be in (typed, or put there by the page). A box
// cannot mark them: a note beside it names them (see `bidiNotes`).
const BIDI_BOXES = ["f-user", "f-agent", "f-session", "f-query", "d-text", "s-user", "w-question", "c-user"];

// The note beside box `id`: shown while its value holds bidi controls, which draw the
// box's text out of order (the value is as typed or stored).
function bidiNote(id) {
  const box = $(id);
  const noteId = id + "-bidi";
  const found = [...new Set(box.value.match(BIDI_CONTROLS) || [])].map(codePoint);
  let note = $(noteId);
  if (!found.length) {
    if (note) note.hidden = true;
    box.removeAttribute("aria-describedby");
    return;
  }
  if (!note) {
    note = el("span", undefined, "bidi-note");
    note.id = noteId;
    (box.closest("label") || box).after(note);
  }
  note.textContent = "holds " + found.join(", ") + " (bidi control" + (found.length > 1 ? "s" : "")
    + "): the text in this box may be drawn out of order";
  note.hidden = false;
  box.setAttribute("aria-describedby", noteId);
}

function bidiNotes() {
  for (const id of BIDI_BOXES) bidiNote(id);
}

function metaText(meta) {
  const keys = Object.keys(meta || {});
  return keys.length ? escapeBidi(JSON.stringify(meta)) : "";
}

function textCell(r) {
  const wrap = document.createElement("div");
  wrap.appendChild(stored("div", r.text, "text"));
  const meta = metaText(r.metadata);
  if (meta) wrap.appendChild(el("div", meta, "meta"));
  return wrap;
}

// Named after its memory for a screen reader (the visible words begin the name), and
// where focus returns when the memory's panel closes.
function openButton(r) {
  const b = button("history / edit", () => openMemory(r.id).catch(fail), "link");
  b.setAttribute("aria-label", "history / edit: " + (r.text.length > 80 ? r.text.slice(0, 80) + "…" : r.text));
  b.dataset.memoryId = r.id;
  return b;
}

// Closes the memory panel; focus goes back to the memory's "history / edit" button.
function closeMemory() {
  drop("memory");  // a memory still on its way is not opened after Close
  drop("history");
  $("detail").hidden = true;
  const opener = [...document.querySelectorAll("#mem-rows button")].find((b) => b.dataset.memoryId === editing.id);
  if (opener) opener.focus();
}

function showForget(scope) {
  mem.scope = scope;
  $("forget").hidden = !scope.user_id;
  $("forget-user").replaceChildren(idNode(scope.user_id || ""));
  $("forget-confirm-input").value = "";
  enableButtons();
}

// The buttons whose request is on its way (Save, Really delete, Forget user): each is off
// until its answer has been handled, and a click meanwhile does nothing. A double click
// on Save sent two PATCHes: the second, on the version the first replaced, got a 409 and
// the page said the saved edit was not saved; two forgets said "0 records erased" after
// erasing them all (a review).
const busy = new Set();

// Runs `action` for button `id` unless its request is already on its way. Focus, on the
// button when it was clicked, goes back to it if nothing else took it meanwhile (a
// disabled button loses it).
async function whileBusy(id, action) {
  if (busy.has(id)) return;
  const button = $(id);
  const focused = document.activeElement === button;
  busy.add(id);
  enableButtons();
  try {
    return await action();
  } finally {
    busy.delete(id);
    enableButtons();
    const lost = document.activeElement === null || document.activeElement === document.body;
    if (focused && lost && !button.disabled && button.offsetParent !== null) button.focus();
  }
}

// Each of those buttons on, unless busy or not for now: Forget user until its user id is
// typed, Save and Delete for a memory deleted elsewhere.
function enableButtons() {
  $("forget-button").disabled = busy.has("forget-button") || !mem.scope.user_id
    || $("forget-confirm-input").value !== mem.scope.user_id;
  for (const b of ["d-save", "d-delete", "d-delete-confirm"]) $(b).disabled = busy.has(b) || editing.gone;
}

// The page of the form's list after the key ``after`` (numbered from ``offset``), or at
// ``offset`` with no key, reached by ``step`` ("older", "newer" or none). With no offset:
// the page shown when the list is the one paged, else the first (a key of one list is
// no place in another). The offset, the URL, the pager's way back and the forget panel
// change only once the page has come: a failed fetch leaves them be.
async function loadMemories(offset = null, step = null, after = null) {
  const current = request("memories");  // the list, from here on: an earlier page or search is stale
  const fields = formFields();
  const scope = scopeFromForm();
  const filters = { memory_type: $("f-type").value, validity: $("f-validity").value === "all" ? "all" : "" };
  const listing = JSON.stringify([scope, filters]);
  if (offset === null) [offset, after] = listing === mem.paged ? [mem.offset, mem.after] : [0, null];
  if (!isScoped(scope)) {
    mem.fields = fields;
    mem.paged = listing;
    mem.offset = 0;
    showForget(scope);
    mem.after = null;
    setUrl({ ...scope, ...filters, offset: "", after: "", q: "" });
    $("mem-status").textContent = "Enter a user, agent or session to see its memories.";
    $("memories").hidden = true;
    $("pager").hidden = true;
    rendered();
    return;
  }
  const page = await current(api("/ui/api/memories?" + query({
    ...scope, memory_type: filters.memory_type, validity: $("f-validity").value, limit: PAGE, offset,
    after,
  })));
  if ((offset === 0 && !after) || listing !== mem.listing) mem.back = [];
  else if (step === "older") mem.back.push({ offset: mem.offset, after: mem.after });
  else if (step === "newer") mem.back.pop();
  mem.listing = listing;
  mem.paged = listing;
  mem.fields = fields;
  mem.query = null;
  mem.offset = offset;
  mem.after = after;
  mem.total = page.total;
  current.clearEarlierError();
  showForget(scope);
  setUrl({ ...scope, ...filters, offset: offset || "", after: after || "", q: "" });
  head(["memory", "type", "scope", "created", "validity", "actions"]);
  $("mem-rows").replaceChildren(...page.results.map((r) => row([
    textCell(r), r.memory_type, scopeCell(r), when(r.created_at), validity(r), openButton(r),
  ])));
  $("memories").hidden = false;
  const last = Math.min(offset + page.results.length, page.total);
  $("mem-status").textContent = page.total + " memories";
  $("page-info").textContent = page.results.length ? offset + 1 + "–" + last + " of " + page.total
    : page.total ? "none from " + (offset + 1) + " (" + page.total + " in all)" : "none";
  $("prev").disabled = offset === 0 && !after;
  mem.next = page.next_after;
  mem.nextOffset = page.next_offset;
  $("next").disabled = page.next_after == null;
  $("pager").hidden = false;
  rendered();
}

async function searchMemories() {
  const fields = formFields();
  const scope = scopeFromForm();
  const q = $("f-query").value.trim();
  if (!q) return loadMemories();
  const current = request("memories");
  showForget(scope);
  setUrl({ ...scope, q, offset: "", after: "" });
  if (!isScoped(scope)) {
    // What was listed is not of this scope: hidden, as the list's own unscoped branch
    // does (it stayed under this message, a review).
    $("mem-status").textContent = "Searching needs a user, agent or session.";
    $("memories").hidden = true;
    $("pager").hidden = true;
    rendered();
    return;
  }
  const type = $("f-type").value;
  const found = await current(api("/v1/memories/search", {
    method: "POST",
    body: { ...Object.fromEntries(Object.entries(scope).filter(([, v]) => v)), query: q, limit: 20,
      memory_types: type ? [type] : null },
  }));
  current.clearEarlierError();
  mem.back = [];
  mem.listing = "";
  mem.fields = fields;
  mem.query = q;
  head(["#", "score", "lexical rank", "dense rank", "memory", "type", "scope", "actions"]);
  $("mem-rows").replaceChildren(...found.results.map((h, i) => row([
    i + 1, h.score.toFixed(4), h.lexical_rank ?? "–", h.dense_rank ?? "–", textCell(h.memory),
    h.memory.memory_type, scopeCell(h.memory), openButton(h.memory),
  ])));
  $("memories").hidden = false;
  $("pager").hidden = true;
  $("mem-status").textContent = found.results.length + " hits for the query (hybrid: lexical and dense ranks fused)";
  rendered();
}

// What the edit panel showed when it opened: Save sends only the fields that differ, and
// the memory's text and updated_at as loaded, so a change another client made since is
// not written over (the server answers 409 and writes nothing).
// `historyAfter`: where the next page of its history starts (null: none).
const editing = { id: null, text: "", meta: "", loadedText: null, updatedAt: null, gone: false,
  historyAfter: null };

// Opens a memory's panel; focus moves to it (`moveFocus`), except when a save reloads it.
async function openMemory(id, moveFocus = true) {
  const current = request("memory");
  const path = "/v1/memories/" + encodeURIComponent(id);
  let r, source, hist;
  try {
    [[r, source], hist] = await current(Promise.all([api(path, { raw: true }), api(path + "/history")]));
  } catch (err) {
    if (!(err instanceof ApiError) || err.status !== 404) throw err;
    // Deleted elsewhere (or its user forgotten) since the list was drawn: said so, the
    // panel of another memory is not left on screen under that message, and the list is
    // drawn as it is now (it showed the memory as current).
    $("detail").hidden = true;
    await reportGone(GONE_OPEN);
    return;
  }
  current.clearEarlierError();
  keepUnsaved(null);
  markGone(false);
  $("d-id").replaceChildren(idNode(r.id));
  const fields = [
    ["type", r.memory_type], ["scope", scopeCell(r)], ["created", when(r.created_at)],
    ["updated", when(r.updated_at)], ["event time", when(r.event_time)],
    ["valid", when(r.valid_from) + " → " + (when(r.valid_to) || "now")],
    ["provenance", isolated(r.provenance || [], ", ")],
  ];
  $("d-fields").replaceChildren(...fields.flatMap(([k, v]) => {
    const dd = el("dd", v instanceof Node ? undefined : v);
    if (v instanceof Node) dd.append(v);
    return [el("dt", k), dd];
  }));
  $("d-text").value = r.text;
  bidiNote("d-text");
  const meta = rawMember(source, "metadata");
  // Bidi controls escaped, as in the list: raw, an override drew the box's values reversed
  // (a review). The box sent back as it is stores the same strings.
  $("d-meta").value = meta === null || meta === "null" ? "{}" : escapeBidi(indentJson(meta));
  // As the boxes hold them (a textarea turns "\r\n" into "\n"), to tell an edit from none.
  editing.id = r.id;
  editing.text = $("d-text").value;
  editing.meta = $("d-meta").value;
  editing.loadedText = r.text;  // as stored ("\r\n" kept), for the server's check
  editing.updatedAt = r.updated_at;
  drop("history");  // a next page of history asked for the memory shown until now
  $("history-rows").replaceChildren();
  appendHistory(hist);
  const form = $("edit-form");
  form.onsubmit = (e) => {
    e.preventDefault();
    whileBusy("d-save", () => saveMemory(r.id))
      .then((saved) => saved && saved.reloaded)
      .catch(fail);
  };
  $("d-delete-confirm").hidden = true;
  $("d-delete").onclick = () => ($("d-delete-confirm").hidden = false);
  $("d-delete-confirm").onclick = () => whileBusy("d-delete-confirm", () => deleteMemory(r.id)).catch(fail);
  $("detail").hidden = false;
  $("detail").scrollIntoView();
  if (moveFocus) $("d-title").focus({ preventScroll: true });
}

// A page of the open memory's history, after the rows shown. The history comes a page at
// a time (at most 100 events or 4 MiB of texts, oldest first); "more events" shows while
// there are more. With only the first page shown, the newest changes, the ones asked
// about when a memory changed, could not be reached (a review).
function appendHistory(hist) {
  $("history-rows").append(...hist.results.map((e) => row([
    when(e.at), e.event, stored("div", e.old_text, "text"), stored("div", e.new_text, "text"), idNode(e.actor ?? ""),
  ])));
  editing.historyAfter = hist.next_after_seq ?? null;
  $("history-more").hidden = editing.historyAfter === null;
}

// The next page of the open memory's history (twice clicked: the second page asked for
// is shown, once).
async function moreHistory() {
  const current = request("history");
  const path = "/v1/memories/" + encodeURIComponent(editing.id) + "/history?";
  const hist = await current(api(path + query({ after_seq: editing.historyAfter })));
  current.clearEarlierError();
  appendHistory(hist);
}

// Sends only what the user changed: an untouched text keeps its line breaks, untouched
// metadata its exact numbers; edited metadata goes as the user's JSON text, not re-encoded.
async function saveMemory(id) {
  const parts = [];
  const text = $("d-text").value;
  const meta = $("d-meta").value;
  if (id === editing.id && meta !== editing.meta) {
    let parsed;
    try {
      parsed = JSON.parse(meta.trim() || "{}");
    } catch (err) {
      showError("metadata is not valid JSON: " + err.message);
      return;
    }
    if (parsed === null || typeof parsed !== "object" || Array.isArray(parsed)) {
      showError("metadata must be a JSON object ({...})");
      return;
    }
    parts.push('"metadata":' + (meta.trim() || "{}"));
  }
  if (id !== editing.id || text !== editing.text) parts.push('"text":' + JSON.stringify(text));
  if (id === editing.id && editing.gone) {
    showError(GONE_SAVE);
    return;
  }
  if (!parts.length) {
    showError("Nothing changed: nothing was saved.");
    return;
  }
  if (id === editing.id) {
    parts.push('"expected_text":' + JSON.stringify(editing.loadedText));
    if (editing.updatedAt) parts.push('"expected_updated_at":' + JSON.stringify(editing.updatedAt));
  }
  // What the user changed, kept should the server refuse it.
  const mine = unsavedEdit(id);
  try {
    await api("/v1/memories/" + encodeURIComponent(id), { method: "PATCH", json: "{" + parts.join(",") + "}" });
  } catch (err) {
    if (err instanceof ApiError && err.status === 404) return goneWhileOpen(id, mine, GONE_SAVE);
    if (!(err instanceof ApiError) || err.status !== 409) throw err;
    // Changed by another client since the panel opened: show it as it is now, and the
    // user's edit beside it, to put back on this version or drop (it was lost before).
    await openMemory(id, false);
    // Kept at once, for this memory only: kept after the list's reload, it outlived a
    // failed reload (lost) or went under another memory opened meanwhile (a review).
    keepUnsaved({ ...mine, id });
    const refused = "This memory was changed since you opened it: it now shows as stored, "
      + "and your edit was not saved. It is kept below the boxes: put it back to save it "
      + "on this version.";
    // Shown once the reload is asked for, so its answer does not clear it (`showError`).
    const reload = reloadShown();
    showError(refused);
    return { reloaded: reload };
  }
  showError("");
  await openMemory(id, false);
  // The list's reload is not part of the Save (see `whileBusy`): Save is on again once
  // the memory is shown as saved, while the list may still be on its way.
  return { reloaded: reloadShown() };
}

// Whether the memory panel is open with an edit not saved.
function editNotSaved() {
  if ($("detail").hidden || editing.id === null) return false;
  const mine = unsavedEdit(editing.id);
  return mine.text !== null || mine.meta !== null;
}

// What the user changed in the boxes of memory `id`'s panel (null: that part unchanged).
function unsavedEdit(id) {
  const text = $("d-text").value;
  const meta = $("d-meta").value;
  return {
    text: id !== editing.id || text !== editing.text ? text : null,
    meta: id === editing.id && meta !== editing.meta ? meta : null,
  };
}

// The list, or the search, shown: drawn again after a write (a save on a search hit
// drew the whole list under the query still in the box: a review), of the scope and
// filters it was shown for, put back into the form (see `restoreForm`).
function reloadShown() {
  restoreForm();
  if (mem.query === null) return loadMemories();
  $("f-query").value = mem.query;
  bidiNote("f-query");
  return searchMemories();
}

const GONE = "This memory no longer exists: it was deleted elsewhere (by another client, or its user was forgotten)";
const GONE_OPEN = GONE + ". The list now shows the memories as they are.";
const GONE_SAVE = GONE + ", so your edit was not saved. The panel shows what it had loaded, and your edit is kept below the boxes to copy.";
const GONE_DELETE = GONE + ": there was nothing left to delete.";

// The panel of memory `id` is of a memory deleted elsewhere (a 404 to its Save or Delete):
// marked so (its Save and Delete off), the user's edit `mine` kept as text under the boxes,
// and the list or search drawn again, as it is now (it showed the memory as current).
async function goneWhileOpen(id, mine, message) {
  if (editing.id === id) {
    markGone(true);
    if (mine.text !== null || mine.meta !== null) keepUnsaved({ ...mine, id });
  }
  await reportGone(message);
}

// Draws the list or search again and shows `message`, shown once the reload is asked for,
// so that its answer does not clear it (`showError`).
async function reportGone(message) {
  const reload = reloadShown();
  showError(message);
  await reload;
}

// Marks the panel as of a memory deleted elsewhere (true), or not (false: a memory opened).
function markGone(gone) {
  editing.gone = gone;
  $("d-gone").hidden = !gone;
  $("detail").dataset.gone = gone ? "1" : "";
  enableButtons();
  $("d-unsaved-use").hidden = gone;
  $("d-unsaved-why").textContent = gone ? "Your edit, not saved (the memory was deleted elsewhere):"
    : "Your edit, not saved (the memory above is as stored now):";
  if (gone) $("d-delete-confirm").hidden = true;
}

// An edit the server refused (409), shown as text under the boxes until it is put back
// in them, dropped, or another memory is opened; null hides it. `mine.id` is the memory
// it was made on: it is never shown, nor put back, under another.
function keepUnsaved(mine) {
  if (mine && mine.id !== editing.id) mine = null;
  const box = $("d-unsaved");
  box.hidden = !mine;
  $("d-unsaved-text").replaceChildren(...(mine && mine.text !== null ? storedParts("text: " + mine.text) : []));
  $("d-unsaved-meta").replaceChildren(...(mine && mine.meta !== null ? storedParts("metadata: " + mine.meta) : []));
  $("d-unsaved-text").hidden = !mine || mine.text === null;
  $("d-unsaved-meta").hidden = !mine || mine.meta === null;
  $("d-unsaved-use").onclick = () => {
    if (!mine || mine.id !== editing.id || editing.gone) return keepUnsaved(null);
    if (mine.text !== null) $("d-text").value = mine.text;
    bidiNote("d-text");
    if (mine.meta !== null) $("d-meta").value = mine.meta;
    keepUnsaved(null);
    showError("");
    $("d-text").focus();
  };
  $("d-unsaved-drop").onclick = () => {
    keepUnsaved(null);
    showError("");
  };
}

// Deletes the memory only if it is still the version the panel loaded (its updated_at,
// which any change of text or metadata moves): Delete removed a version the user never
// saw (a review). A 409 reloads the panel as Save's does; a 404 says it is gone.
async function deleteMemory(id) {
  const mine = unsavedEdit(id);
  const expected = id !== editing.id ? {}
    : editing.updatedAt ? { expected_updated_at: editing.updatedAt }
      : { expected_text: editing.loadedText };
  try {
    await api("/v1/memories/" + encodeURIComponent(id) + "?" + query(expected), { method: "DELETE" });
  } catch (err) {
    if (err instanceof ApiError && err.status === 404) return goneWhileOpen(id, mine, GONE_DELETE);
    if (!(err instanceof ApiError) || err.status !== 409) throw err;
    await openMemory(id, false);
    if (mine.text !== null || mine.meta !== null) keepUnsaved({ ...mine, id });
    const refused = "This memory was changed since you opened it, so it was not deleted: it now "
      + "shows as stored. Delete it again to delete this version.";
    const reload = reloadShown();
    showError(refused);
    await reload;
    return;
  }
  $("detail").hidden = true;
  await reloadShown();
  // The panel that had focus is gone: focus goes to the list's status line (it dropped to
  // the page's top, where a keyboard user started again: a review).
  $("mem-status").focus();
}

async function forgetUser() {
  const user = mem.scope.user_id;
  if (!user || $("forget-confirm-input").value !== user) return;
  const out = await api("/v1/memories/forget", { method: "POST", body: { user_id: user } });
  $("detail").hidden = true;
  // What is shown, drawn again; a list from its first page (its later ones are gone).
  mem.offset = 0;
  mem.after = null;
  await reloadShown();
  // The session logs it emptied too: a user of chats only read "0 records erased".
  const logs = out.sessions_forgotten
    ? ", and " + out.sessions_forgotten + " session log(s) of " + out.turns_forgotten + " turns"
    : "";
  $("mem-status").replaceChildren(
    "Forgot user ", idNode(out.user_id), ": " + out.forgotten + " records erased" + logs + ".");
  $("mem-status").focus();  // the Forget button, off now, had it (see deleteMemory)
}

// -- sessions -------------------------------------------------------------------------

const SESSION_PAGE = 100;
// Per list of sessions (its element id): what it lists and how far it has got.
const lists = {};

// The panel each list opens its sessions in, and that panel's requests.
const OPENS_IN = {
  "session-list": { panel: "session-detail", requests: ["turns", "more", "window"] },
  "cache-sessions": { panel: "cache-detail", requests: ["cache"] },
};

// The first page of sessions, most recently active first; "more sessions" adds the next.
// Listed for another user, the session open until now (of the user before) is closed,
// and leaves the URL: it stayed on screen and in the URL under the new list, so a reload
// or a shared link opened it beside another user's sessions (a review).
async function listSessions(listId, userInput, onPick) {
  const user = idOf(userInput);
  const before = lists[listId];
  if (before && before.user !== user) {
    const opens = OPENS_IN[listId];
    for (const panel of opens.requests) drop(panel);
    $(opens.panel).hidden = true;
    setUrl({ user_id: user, session_id: null });
  } else setUrl({ user_id: user });
  lists[listId] = { user, onPick, offset: 0, shown: new Set(), open: before && before.user === user ? before.open : null };
  $(listId).replaceChildren();
  $(listId + "-more").hidden = true;
  return moreSessions(listId);
}

// Marks session `sid`'s chip in list `listId` as the one open (aria-current; the look is
// the stylesheet's), and no other.
function markOpen(listId, sid) {
  const list = lists[listId];
  if (list) list.open = sid;
  for (const chip of $(listId).querySelectorAll("button.chip")) {
    if (chip.dataset.sid === sid) chip.setAttribute("aria-current", "true");
    else chip.removeAttribute("aria-current");
  }
}

// The most ids one request may ask for (GET /v1/sessions's limit).
const SESSIONS_MAX = 1000;

// One more page of a list (asking for one id more, to know whether there are others).
// The list is ordered by activity, so sessions move while it is paged: one active since
// the first page moved above the offset and was never listed, and one erased moved the
// rest up, so the next page skipped one (a review). Up to SESSIONS_MAX, "more" therefore
// asks for the whole list so far again and draws it anew, in its current order; past
// that, it adds the next page, each id once.
// An answer is drawn only if the list is still where it was when it was asked for: two
// clicks (a double click, or one while the first answer is on its way) asked for the
// same page twice, and past SESSIONS_MAX its length was counted twice, so the next click
// skipped 100 sessions, never listed (a review).
async function moreSessions(listId) {
  const list = lists[listId];
  const from = list.offset;
  const upTo = from + SESSION_PAGE;
  const whole = from > 0 && upTo < SESSIONS_MAX;
  const found = await api("/v1/sessions?" + query({
    user_id: list.user, order: "newest", limit: (whole ? upTo : SESSION_PAGE) + 1,
    offset: whole ? 0 : from,
  }));
  // Listed again meanwhile, or this page already drawn by another click's answer.
  if (lists[listId] !== list || list.offset !== from) return [];
  const page = found.results.slice(0, whole ? upTo : SESSION_PAGE);
  if (whole) {
    list.offset = 0;
    list.shown = new Set();
    $(listId).replaceChildren();
  }
  list.offset += page.length;
  const items = page.filter((sid) => !list.shown.has(sid)).map((sid) => {
    list.shown.add(sid);
    const li = document.createElement("li");
    const chip = button("", () => list.onPick(sid).catch(fail), "chip wrap");
    chip.append(idNode(sid));
    chip.dataset.sid = sid;
    if (list.open === sid) chip.setAttribute("aria-current", "true");
    li.appendChild(chip);
    return li;
  });
  if (!list.shown.size) items.push(el("li", "no sessions" + (list.user ? " for this user" : ""), "status"));
  $(listId).append(...items);
  $(listId + "-more").hidden = found.results.length <= page.length;
  return page;
}

// The session shown, and the last turn of it shown (null: none yet).
const sess = { id: null, last: null };

function wireSessions() {
  $("sess-scope").addEventListener("submit", (e) => {
    e.preventDefault();
    listSessions("session-list", "s-user", openSession).catch(fail);
  });
  $("session-list-more").addEventListener("click", () => moreSessions("session-list").catch(fail));
  $("turns-more").addEventListener("click", () => loadTurns().catch(fail));
  $("window-form").addEventListener("submit", (e) => {
    e.preventDefault();
    buildWindow().catch(fail);
  });
}

async function startSessions() {
  $("s-user").value = params.get("user_id") || "";
  bidiNotes();
  const pick = params.get("session_id");
  // Asked for now: a session the user opens from the list before this log has come wins.
  const current = request("turns");
  // A linked session's log is fetched beside the list, and shown when the list has it or
  // the log has turns (the list shows the newest sessions first, a page at a time).
  const [ids, first] = await Promise.all([
    listSessions("session-list", "s-user", (sid) => openSession(sid)),
    pick ? turnsPage(pick, -1) : null,
  ]);
  if (pick && (ids.includes(pick) || first.results.length)) await openSession(pick, first, current);
  rendered();
}

const TURN_PAGE = 200;

// A page of turns, asked with one turn more than is shown, to know whether there are others.
// Session ids travel in the query, where every id fits ("." and ".." would be dropped from
// a URL's path, "team/chat-1" read as two segments).
function turnsPage(sid, after) {
  return api("/ui/api/turns?" + query({ session_id: sid, after_seq: after, limit: TURN_PAGE + 1 }));
}

// Opens session `sid` (its first page of turns: `firstPage`, or fetched), as the request
// `current` of the panel when one was made earlier.
async function openSession(sid, firstPage, current = request("turns")) {
  const found = await current(firstPage || turnsPage(sid, -1));
  // A next page of turns or a window asked for the session shown until now is not drawn
  // into this one.
  drop("more");
  drop("window");
  current.clearEarlierError();
  sess.id = sid;
  sess.last = null;
  setUrl({ session_id: sid });
  $("s-id").replaceChildren(idNode(sid));
  markOpen("session-list", sid);
  $("turn-rows").replaceChildren();
  $("window-out").hidden = true;
  $("session-detail").hidden = false;
  appendTurns(found);
}

// The next page of the session shown (twice clicked: the second page asked for is shown),
// asked from the last turn shown, so that the page can tell it continues the log shown: a
// session forgotten and written again elsewhere numbers its turns from 0 again, and its
// turns were appended under the erased ones as one log; a session only forgotten hid
// "more turns" and left the erased turns on screen (a review). Then it says so and shows
// the log as it is now, from its start.
async function loadTurns() {
  const current = request("more");
  const last = sess.last;
  const found = await current(api("/ui/api/turns?" + query({
    session_id: sess.id, after_seq: last.seq - 1, limit: TURN_PAGE + 2,
  })));
  current.clearEarlierError();
  const first = found.results[0];
  if (!first || first.seq !== last.seq || first.created_at !== last.created_at || first.content !== last.content) {
    await openSession(sess.id);
    showError("This session's log changed since it was shown (erased, or erased and written again "
      + "elsewhere): it is shown again as it is now, from its start.");
    return;
  }
  if (found.results.length === 1 && found.next_after_seq === last.seq) {
    // The page was cut by its bytes to the last turn shown alone (it and the next one are
    // over the 4 MiB of a page): the next page is asked after it. Left at that, "more
    // turns" asked the same page again at every click, and the turns after it were out
    // of reach (the session's diff review).
    appendTurns(await current(turnsPage(sess.id, last.seq)));
    return;
  }
  appendTurns({ ...found, results: found.results.slice(1) });
}

// A turn's content, then each tool call it made and, for a tool result, the call it
// answers: all as text.
// The tool's name and the call's id are drawn as ids (idNode: isolated, unseen characters
// marked) and the model-written arguments in their own isolate: drawn as one string, an
// override (U+202E) in a name or the arguments reversed the rest of the line, the page's
// brackets and the id included, and an id holding a U+200B read as another call's (a review).
function turnText(t) {
  const box = stored("div", t.content, "text");
  for (const c of t.tool_calls || []) {
    const line = el("div", undefined, "call");
    line.append("\u2192 ", idNode(c.name), "(", el("bdi", c.arguments), ")  [", idNode(c.id), "]");
    box.appendChild(line);
  }
  if (t.tool_call_id) {
    const line = el("div", "\u21a9 result of ", "call");
    line.append(idNode(t.tool_call_id));
    box.appendChild(line);
  }
  return box;
}

function appendTurns(found) {
  for (const t of found.results.slice(0, TURN_PAGE)) {
    $("turn-rows").appendChild(row([
      t.seq, t.role, stored("div", t.name, "wrap"), t.tokens, turnText(t), when(t.created_at),
    ]));
    sess.last = t;
  }
  // More when the page was full, or the server cut it short by its bytes.
  $("turns-more").hidden = found.results.length <= TURN_PAGE && found.next_after_seq == null;
}

const SEGMENT_CLASSES = ["c0", "c1", "c2", "c3", "c4", "c5", "c6", "c7"];

// The window is of the user whose sessions are listed (the URL's), not of one typed in the
// box and not submitted: that one's memories were placed in the window of another user's
// session (a review).
async function buildWindow() {
  const user = lists["session-list"] ? lists["session-list"].user : "";
  const budget = parseInt($("w-budget").value, 10) || 2000;
  const current = request("window");
  const w = await current(api("/ui/api/window?" + query({ session_id: sess.id }), {
    method: "POST",
    body: { question: $("w-question").value, token_budget: budget, model: $("w-model").value.trim(),
      ...(user ? { user_id: user } : {}) },
  }));
  current.clearEarlierError();
  const color = {};
  w.segments.forEach((u, i) => (color[u.name] = SEGMENT_CLASSES[i % SEGMENT_CLASSES.length]));
  const breaks = new Map(w.breakpoints.map((b) => [b.after, b]));
  $("w-summary").textContent = w.tokens + " of " + w.budget + " tokens · " + w.blocks.length + " blocks · " +
    w.breakpoints.length + " cache breakpoints · " + w.left_out_count + " left out";
  const strip = [];
  w.blocks.forEach((b, i) => {
    const part = el("span", "", "seg " + color[b.segment]);
    part.title = b.segment + " · " + b.tokens + " tokens";
    part.style.flexGrow = String(Math.max(b.tokens, 1));  // CSSOM, allowed by the CSP
    strip.push(part);
    if (breaks.has(i)) strip.push(el("span", "", "bp"));
  });
  $("w-strip").replaceChildren(...strip);
  $("w-legend").replaceChildren(...w.segments.map((u) => {
    const li = el("li", u.name + ": " + u.tokens + " tokens, " + u.items + " items" +
      (u.dropped ? ", " + u.dropped + " dropped" : ""));
    li.prepend(el("span", "", "swatch " + color[u.name]));
    return li;
  }));
  const rows = [];
  w.blocks.forEach((b, i) => {
    rows.push(row([i, el("span", b.segment, "swatch-text " + color[b.segment]), b.role, b.tokens, stored("div", b.text, "text")]));
    const bp = breaks.get(i);
    if (bp) {
      const tr = row(["", "cache breakpoint (" + bp.ttl + ")", "", bp.prefix_tokens, "prefix up to here is cached"]);
      tr.className = "bp-row";
      rows.push(tr);
    }
  });
  $("block-rows").replaceChildren(...rows);
  $("leftout-rows").replaceChildren(...leftOutRows(w));
  $("window-out").hidden = false;
}

// The server lists the last items left out of each segment and counts the rest: the
// count goes first in its segment's rows.
function leftOutRows(w) {
  if (!w.left_out_count) return [row(["", "nothing was left out", "", ""])];
  const counts = new Map(w.left_out_not_listed.map((n) => [n.segment, row([
    n.segment, n.count + (n.segment === "turns" ? " older turns" : " more items") + " not placed (not listed)",
    n.tokens, "",
  ])]));
  const rows = [];
  for (const o of w.left_out) {
    if (counts.has(o.segment)) rows.push(counts.get(o.segment));
    counts.delete(o.segment);
    rows.push(row([o.segment, idNode(o.key), o.tokens, o.reason]));
  }
  return [...rows, ...counts.values()];
}

// -- cache and cost ---------------------------------------------------------------------

let chartUrl = null;

function wireCache() {
  $("cache-scope").addEventListener("submit", (e) => {
    e.preventDefault();
    listCache().catch(fail);
  });
  $("cache-sessions-more").addEventListener("click", () => moreSessions("cache-sessions").catch(fail));
}

// Lists the sessions of the user typed. With no session open (the one of the user listed
// before is closed), the list's first, the most recently active, is shown: what a load of
// the view's URL shows.
async function listCache() {
  const ids = await listSessions("cache-sessions", "c-user", openCache);
  if (ids.length && $("cache-detail").hidden) await openCache(ids[0]);
}

async function startCache() {
  $("c-user").value = params.get("user_id") || "";
  bidiNotes();
  $("c-model").value = params.get("model") || "claude-sonnet-4-6";
  const pick = params.get("session_id");
  const current = request("cache");  // a session opened from the list before this replay came wins
  // A linked session's replay is fetched beside the list, and shown when the list has it
  // or its log has turns (from_seq is null for an empty log); with none named, the most
  // recently active session (the list's first) is shown.
  const [ids, data] = await Promise.all([
    listSessions("cache-sessions", "c-user", (sid) => openCache(sid)),
    pick ? cacheData(pick) : null,
  ]);
  const show = pick ? (ids.includes(pick) || data.from_seq !== null ? pick : null) : ids[0];
  if (show) await openCache(show, show === pick ? data : null, current);
  rendered();
}

function money(x) {
  return (x < 0 ? "-$" : "$") + Math.abs(x).toFixed(Math.abs(x) < 1 ? 5 : 2);
}

// The server runs one replay per tenant at a time (429 while another tab's runs) and a
// few in all (503 when they stay busy): try again a little later, a few times.
async function cacheData(sid) {
  const model = $("c-model").value.trim();
  const path = "/ui/api/cache?" + query({ session_id: sid, model });
  for (let attempt = 1; ; attempt++) {
    try {
      return await api(path);
    } catch (err) {
      if (attempt >= 4 || (err.status !== 429 && err.status !== 503)) throw err;
      await new Promise((resolve) => setTimeout(resolve, 1000 * attempt));
    }
  }
}

// Opens session `sid`'s replay (`prefetched`, or fetched), as the request `current` of
// the panel when one was made earlier.
async function openCache(sid, prefetched, current = request("cache")) {
  const data = await current(prefetched || cacheData(sid));
  current.clearEarlierError();  // a new session's replay: an earlier error no longer applies
  setUrl({ session_id: sid, model: $("c-model").value.trim() });
  $("c-id").replaceChildren(idNode(sid));
  markOpen("cache-sessions", sid);
  $("c-summary").textContent = data.calls.length + " calls replayed with " + data.model + " · cache-read share " +
    (100 * data.read_share).toFixed(1) + "% · saved " + money(data.saved_usd) +
    (data.older_turns_left_out ? " · " + data.note : "");
  $("call-rows").replaceChildren(...data.calls.map((c) => row([
    c.seq, c.input_tokens, c.cache_read_tokens, c.cache_write_tokens, (100 * c.read_share).toFixed(1) + "%",
    money(c.cost_usd), money(c.cost_without_cache_usd), money(c.saved_usd),
  ])));
  if (chartUrl) URL.revokeObjectURL(chartUrl);
  // The server-made SVG, shown in an <img> (scripts never run there) from a blob: URL.
  chartUrl = URL.createObjectURL(new Blob([data.svg], { type: "image/svg+xml" }));
  const img = $("c-chart");
  // Settles either way: an image that cannot be decoded fires "error", never "load".
  const loaded = new Promise((resolve, reject) => {
    img.onload = resolve;
    img.onerror = () => reject(new Error("The cache chart could not be shown (the table below has the numbers)."));
  });
  img.hidden = false;
  img.src = chartUrl;
  $("cache-detail").hidden = false;
  try {
    await loaded;
  } catch (err) {
    img.hidden = true;
    throw err;
  }
}

// -- boot -------------------------------------------------------------------------------

document.addEventListener("DOMContentLoaded", () => {
  $("signin-form").addEventListener("submit", signIn);
  $("signout").addEventListener("click", signOut);
  // Back and Forward (an entry setUrl pushed, or a link's fragment changed in the tab)
  // keep the document: it is loaded again, and each view draws itself from the URL. An
  // edit not saved went with it, unasked (the session's diff review): the page asks
  // first, and staying puts back the URL of what is shown.
  let leaving = false;
  window.addEventListener("popstate", () => {
    if (editNotSaved() && !confirm("Your edit of this memory is not saved. Leave it?")) {
      history.pushState(null, "", shownUrl);
      return;
    }
    leaving = true;
    location.reload();
  });
  // Leaving the page (another site, the tab closed, a reload) asks too.
  window.addEventListener("beforeunload", (e) => {
    if (!leaving && editNotSaved()) e.preventDefault();
  });
  if (sessionStorage.getItem(KEY)) start().catch(fail).finally(() => { booting = false; });
  else showSignin("");
});
