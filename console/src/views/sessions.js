// Sessions: the list (exec jobs' channels and interactive shells) and one session with its
// recording replayed in asciinema-player. The recording endpoint needs the key header, so the
// console fetches the asciicast itself and hands the player the text.
import * as AsciinemaPlayer from "asciinema-player";
import "asciinema-player/dist/bundle/asciinema-player.css";
import { h, fill, when, short, badge } from "../dom.js";
import { pages } from "./devices.js";

const PER_PAGE = 25;

export async function sessionList(main, ctx) {
  let page = 1;
  const type = h("select#session-type", { onchange: () => { page = 1; refresh().catch(ctx.showError); } },
    ["", "exec", "shell"].map((t) => h("option", { value: t }, t || "any type")));
  const body = h("tbody");
  const pager = h("div.pager");
  fill(main,
    h("div.toolbar", h("h1", "Sessions"), h("label", { for: "session-type" }, "Type "), type),
    h("table.list#sessions", h("thead", h("tr", ["Session", "Type", "Device", "User", "Started", "Ended", "Reason", "Recorded"].map((t) => h("th", t)))), body),
    pager);
  async function refresh() {
    const { items, total } = await ctx.api.page("/v1/sessions", {
      page, per_page: PER_PAGE, type: type.value, device_id: ctx.query.get("device_id") ?? undefined,
    });
    fill(body, items.length ? items.map((s) => h("tr", { dataset: { sessionId: s.id } },
      h("td", h("a", { href: `#/sessions/${s.id}` }, short(s.id))),
      h("td", s.type),
      h("td.device", { title: s.device_id }, s.device_name ?? short(s.device_id)),
      h("td", s.username),
      h("td", when(s.started_at)),
      h("td", s.active ? badge("active", "running") : when(s.ended_at)),
      h("td", s.end_reason ?? "—"),
      h("td", s.recorded ? `${s.bytes} bytes${s.truncated ? " (cut)" : ""}` : "no"))) : h("tr", h("td.muted", { colspan: 8 }, "No sessions.")));
    fill(pager, pages(total, page, (p) => { page = p; refresh().catch(ctx.showError); }, PER_PAGE));
  }
  await refresh();
  ctx.every(5000, () => refresh().catch(ctx.showError));
}

export async function sessionDetail(main, ctx) {
  const [id] = ctx.params;
  const session = await ctx.api.get(`/v1/sessions/${encodeURIComponent(id)}`);
  const stage = h("div.player#player");
  fill(main,
    h("h1", "Session ", h("code", id)),
    h("p", badge(session.type), ` ${session.username} on device ${session.device_name ? `${session.device_name} (${session.device_id})` : session.device_id}, `,
      session.term ? `${session.term} ${session.cols}×${session.rows}, ` : "no terminal, ",
      `started ${when(session.started_at)}`, session.ended_at ? `, ended ${when(session.ended_at)} (${session.end_reason ?? "—"})` : " (active)",
      session.job_id ? [" — ", h("a", { href: `#/jobs/${session.job_id}` }, "job")] : []),
    closeAction(session, ctx),
    stage);
  if (!session.recorded) {
    fill(stage, h("p.muted", "This session was not recorded."));
    return;
  }
  let cast = await ctx.api.get(`/v1/sessions/${encodeURIComponent(id)}/recording`, { signal: ctx.signal });
  if (!session.term) cast = withCarriageReturns(cast);
  const player = AsciinemaPlayer.create({ data: cast }, stage, {
    autoPlay: true,
    fit: "width",
    idleTimeLimit: 2,
    terminalFontFamily: "ui-monospace, 'DejaVu Sans Mono', monospace",
  });
  ctx.onCleanup(() => player.dispose());
}

/** A live shell can be closed by owners and administrators (`POST /v1/sessions/{id}/close`). */
function closeAction(session, ctx) {
  if (session.type !== "shell" || !session.active) return [];
  const button = h("button.danger#close-session", { type: "button", onclick: async () => {
    button.disabled = true;
    try {
      await ctx.api.post(`/v1/sessions/${encodeURIComponent(session.id)}/close`, { reason: "closed from the console" });
      fill(button.parentNode, badge("closing", "canceled"), " the shell is being closed; its user is told why.");
    } catch (e) {
      button.disabled = false;
      ctx.showError(e);
    }
  } }, "Close session");
  return h("p.session-actions", ctx.access.action("sessions", button), ctx.access.may("sessions") ? [] : [" ", h("span.muted", ctx.access.why("sessions"))]);
}

/**
 * An exec job without a pseudo-terminal writes bare line feeds, which a terminal (the player)
 * shows as a staircase; a pty would have added the carriage returns. Adds them to output
 * events, as `stty onlcr` would, leaving the recording's timing and every other byte alone.
 */
export function withCarriageReturns(cast) {
  const lines = cast.split("\n");
  return lines
    .map((line, index) => {
      if (index === 0 || line.trim() === "") return line; // the header, the last newline
      try {
        const event = JSON.parse(line);
        if (Array.isArray(event) && event[1] === "o" && typeof event[2] === "string") {
          event[2] = event[2].replace(/\r?\n/g, "\r\n");
          return JSON.stringify(event);
        }
      } catch {
        // Not an event line: left as it is, for the player to judge.
      }
      return line;
    })
    .join("\n");
}
