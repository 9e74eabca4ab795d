// The sshq web console: one page, hash routes, one view module per screen. The API key lives
// in memory and in sessionStorage (gone when the tab closes), never in localStorage, a cookie
// or a URL.
import "./style.css";
import { Api, ApiError } from "./api.js";
import { Access } from "./access.js";
import { h, fill } from "./dom.js";
import { signIn } from "./views/signin.js";
import { devices } from "./views/devices.js";
import { run } from "./views/run.js";
import { jobList, jobDetail } from "./views/jobs.js";
import { batchList, batchDetail } from "./views/batches.js";
import { sessionList, sessionDetail } from "./views/sessions.js";
import { shell } from "./views/shell.js";

const KEY = "sshq.apiKey";
const main = document.getElementById("main");
const banner = document.getElementById("error");
let api = null;
let tenant = null;
let access = null;
let cleanups = [];

const routes = [
  [/^\/devices$/, devices],
  [/^\/run$/, run],
  [/^\/jobs$/, jobList],
  [/^\/jobs\/([^/]+)$/, jobDetail],
  [/^\/batches$/, batchList],
  [/^\/batches\/([^/]+)$/, batchDetail],
  [/^\/sessions$/, sessionList],
  [/^\/sessions\/([^/]+)$/, sessionDetail],
  [/^\/shell\/([^/]+)$/, shell],
];

/** Shows an error (an ApiError in the API's format, or anything thrown) above the view. */
export function showError(error) {
  if (error?.name === "AbortError") return;
  const text = error instanceof ApiError ? error.describe() : String(error?.message ?? error);
  fill(banner, h("strong", "Error: "), text, h("button.dismiss", { type: "button", onclick: hideError }, "×"));
  banner.hidden = false;
  if (error instanceof ApiError && error.status === 401 && api) {
    // The key was revoked or expired while signed in.
    signOut("The API key is no longer accepted; sign in again.");
  }
}

function hideError() {
  banner.hidden = true;
  banner.replaceChildren();
}

async function signedIn(key) {
  const candidate = new Api(key);
  const settings = await candidate.get("/v1/tenant"); // a real call: the key must work
  const me = await candidate.get("/v1/keys/current");
  api = candidate;
  tenant = settings;
  access = new Access(me);
  sessionStorage.setItem(KEY, key);
  document.getElementById("nav").hidden = false;
  document.getElementById("signout").hidden = false;
  fill(
    document.getElementById("who"),
    "tenant ",
    h("strong", { id: "tenant" }, settings.tenant_id),
    " · ",
    h("span", { id: "role", title: `may: ${(me.may ?? []).join(", ")}` }, me.role),
  );
}

function signOut(message) {
  api = null;
  tenant = null;
  access = null;
  sessionStorage.removeItem(KEY);
  document.getElementById("nav").hidden = true;
  document.getElementById("signout").hidden = true;
  document.getElementById("who").replaceChildren();
  stopView();
  if (message) {
    fill(banner, message);
    banner.hidden = false;
  }
  if (location.hash !== "#/signin") location.hash = "#/signin";
  else route();
}

function stopView() {
  for (const cleanup of cleanups.splice(0)) {
    try {
      cleanup();
    } catch (e) {
      console.warn("cleanup failed", e);
    }
  }
}

function route() {
  stopView();
  const path = location.hash.replace(/^#/, "").split("?")[0] || "/devices";
  const query = new URLSearchParams(location.hash.split("?")[1] ?? "");
  if (!api) {
    fill(main, signIn({ onKey: attempt }));
    return;
  }
  if (path === "/signin") {
    location.hash = "#/devices";
    return;
  }
  for (const link of document.querySelectorAll("#nav a")) {
    link.classList.toggle("active", path.startsWith(link.getAttribute("href").slice(1)));
  }
  const found = routes.find(([pattern]) => pattern.test(path));
  if (!found) {
    fill(main, h("p", "No such page. "), h("a", { href: "#/devices" }, "Devices"));
    return;
  }
  const [pattern, view] = found;
  const params = pattern.exec(path).slice(1).map(decodeURIComponent);
  const controller = new AbortController();
  cleanups.push(() => controller.abort());
  const ctx = {
    /** The API, its calls aborted when the view is left. */
    api: api.bound(controller.signal),
    tenant,
    /** What the key may do (`access.may("exec")`) and why not (`access.why`). */
    access,
    params,
    query,
    signal: controller.signal,
    onCleanup: (fn) => cleanups.push(fn),
    showError,
    hideError,
    /** setInterval stopped with the view. */
    every(ms, fn) {
      const timer = setInterval(fn, ms);
      cleanups.push(() => clearInterval(timer));
    },
  };
  main.replaceChildren();
  Promise.resolve(view(main, ctx)).catch(showError);
}

async function attempt(key) {
  hideError();
  try {
    await signedIn(key);
  } catch (e) {
    showError(e);
    return false;
  }
  if (location.hash === "#/signin" || location.hash === "") location.hash = "#/devices";
  else route();
  return true;
}

document.getElementById("signout").addEventListener("click", () => signOut());
window.addEventListener("hashchange", (event) => {
  // Hash changes in quick succession queue one event each, all handled once the last has
  // happened: only the event of the current hash routes (a view such as the shell must not
  // start twice; a view left meanwhile stops, its API calls aborted).
  if (new URL(event.newURL).hash !== location.hash) return;
  hideError();
  route();
});

const saved = sessionStorage.getItem(KEY);
if (saved) {
  signedIn(saved).then(route, () => {
    sessionStorage.removeItem(KEY);
    route();
  });
} else {
  route();
}
