// An interactive terminal: xterm.js over the shell WebSocket (`GET /v1/devices/{id}/shell`).
// Browsers cannot set headers on a WebSocket, so the console first asks for a single-use,
// short-lived ticket (`POST /v1/sessions/tickets`, with the key header) and opens the socket
// with `?ticket=`; the API key itself never appears in a URL. Terminal bytes travel in binary
// frames both ways; text frames carry JSON control: `resize` from us, `session`, `error`,
// `exit` and `closed` from the API.
import { Terminal } from "@xterm/xterm";
import { FitAddon } from "@xterm/addon-fit";
import "@xterm/xterm/css/xterm.css";
import { h, fill, badge } from "../dom.js";
import { adoptCreatedStyles, dropDetachedStyles } from "../styles.js";

export async function shell(main, ctx) {
  const [deviceId] = ctx.params;
  const device = await ctx.api.get(`/v1/devices/${encodeURIComponent(deviceId)}`);
  const state = h("div.shell-state#shell-state", badge("connecting", "queued"));
  const screen = h("div.terminal#terminal");
  const close = h("button", { type: "button", onclick: () => socket?.close(1000, "closed by the user") }, "Disconnect");
  fill(main, h("div.toolbar", h("h1", "Shell on ", device.name), state, close), screen);
  if (!ctx.access.may("shell")) {
    fill(state, badge("refused", "failed"), " ", ctx.access.why("shell"));
    close.disabled = true;
    return;
  }
  // A refused upgrade reaches the page only as a closed socket (code 1006), so the reasons
  // the console can know of are checked first and shown plainly.
  const settings = await ctx.api.get("/v1/tenant");
  if (!settings.interactive_sessions) {
    fill(state, badge("refused", "failed"),
      " this tenant does not allow interactive shells (an owner sets interactive_sessions with PATCH /v1/tenant)");
    close.disabled = true;
    return;
  }

  adoptCreatedStyles();
  const term = new Terminal({ cursorBlink: true, convertEol: false, scrollback: 5000, fontFamily: "ui-monospace, 'DejaVu Sans Mono', monospace" });
  const fit = new FitAddon();
  term.loadAddon(fit);
  term.open(screen);
  fit.fit();
  let socket = null;
  ctx.onCleanup(() => {
    socket?.close(1000, "left the page");
    term.dispose();
    dropDetachedStyles();
  });

  const { ticket } = await ctx.api.post("/v1/sessions/tickets");
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  const query = new URLSearchParams({ ticket, cols: String(term.cols), rows: String(term.rows), term: "xterm-256color" });
  socket = new WebSocket(`${scheme}://${location.host}/v1/devices/${encodeURIComponent(deviceId)}/shell?${query}`);
  socket.binaryType = "arraybuffer";
  const encoder = new TextEncoder();
  let ended = false;

  socket.addEventListener("open", () => {
    fill(state, badge("connected", "running"));
    term.focus();
  });
  socket.addEventListener("message", (event) => {
    if (typeof event.data !== "string") {
      term.write(new Uint8Array(event.data));
      return;
    }
    let control;
    try {
      control = JSON.parse(event.data);
    } catch {
      return;
    }
    if (control.type === "session") {
      screen.dataset.session = control.id;
      fill(state, badge("connected", "running"), " session ", h("a", { href: `#/sessions/${control.id}` }, control.id));
    } else if (control.type === "error") {
      term.write(`\r\n\x1b[31m[sshq: ${control.message}]\x1b[0m\r\n`);
    } else if (control.type === "exit") {
      const how = control.signal ? `signal ${control.signal}` : `status ${control.status}`;
      state.append(" ", badge(`exited with ${how}`, "finished"));
    } else if (control.type === "closed") {
      ended = true;
      screen.dataset.closed = control.reason;
      state.append(" ", badge(`closed: ${control.reason}`, "canceled"));
    }
  });
  socket.addEventListener("close", (event) => {
    if (!ended) {
      // Refused before the upgrade (the browser hides the HTTP answer) or cut off.
      fill(state, badge("disconnected", "failed"), ` the connection closed${event.reason ? `: ${event.reason}` : ""} (code ${event.code})`);
    }
    close.disabled = true;
  });

  const send = (data) => {
    if (socket.readyState === WebSocket.OPEN) socket.send(data);
  };
  term.onData((data) => send(encoder.encode(data)));
  term.onBinary((data) => send(Uint8Array.from(data, (c) => c.charCodeAt(0))));
  term.onResize(({ cols, rows }) => send(JSON.stringify({ type: "resize", cols, rows })));
  const observer = new ResizeObserver(() => fit.fit());
  observer.observe(screen);
  ctx.onCleanup(() => observer.disconnect());
}
