// What the signed-in key may do: the scopes `GET /v1/keys/current` lists in `may` (read, exec,
// devices, keys, tenants, templates, settings, shell, sessions). The console hides or disables
// what the key may not do and says why in plain words; the API enforces the same rules anyway
// (a forged click still gets 403).
import { h } from "./dom.js";

const WHO = {
  exec: ["run commands or cancel them", "operator, administrator or owner"],
  shell: ["open interactive shells", "operator, administrator or owner"],
  sessions: ["close other people's live shells", "administrator or owner"],
  devices: ["register or change devices", "administrator or owner"],
};

export class Access {
  constructor(me) {
    this.role = me.role;
    this.scopes = new Set(me.may ?? []);
  }

  may(scope) {
    return this.scopes.has(scope);
  }

  /** Why the key may not do what `scope` grants: `an observer key may not run commands …`. */
  why(scope) {
    const [what, who] = WHO[scope] ?? [`use ${scope}`, "another role"];
    return `Your key's role (${this.role}) may not ${what}; an ${who} key may.`;
  }

  /**
   * `el` if the key may do `scope`, else a disabled button with the same label whose title
   * (and accessible description) is the reason.
   */
  action(scope, el) {
    if (this.may(scope)) return el;
    return h("button.denied", { type: "button", disabled: true, title: this.why(scope), dataset: { denied: scope } }, el.textContent);
  }

  /** A plain notice naming what the key may not do among `scopes`, or nothing. */
  notice(...scopes) {
    const missing = scopes.filter((s) => !this.may(s));
    if (!missing.length) return [];
    return h("p.notice.access", { role: "note" }, missing.map((s) => this.why(s)).join(" "));
  }
}
