// The one way the console talks to the API: every call carries the key in the `X-API-Key`
// header (never in a URL), and every error answer in the API's documented format
// (`{"error_code", "error_message", "property", "details"}`) becomes an `ApiError`.

export class ApiError extends Error {
  constructor(status, code, message, property) {
    super(message);
    this.status = status;
    this.code = code;
    this.property = property;
  }

  /** One line for people: `UNAUTHENTICATED (401): invalid API key` (+ the property). */
  describe() {
    const where = this.property ? ` [${this.property}]` : "";
    return `${this.code} (${this.status})${where}: ${this.message}`;
  }
}

async function failure(response) {
  let body = null;
  try {
    body = await response.json();
  } catch {
    // Not JSON (a proxy in between, say): the status says enough.
  }
  return new ApiError(
    response.status,
    body?.error_code ?? `HTTP_${response.status}`,
    body?.error_message ?? (response.statusText || "request failed"),
    body?.property,
  );
}

export class Api {
  constructor(key) {
    this.key = key;
  }

  async request(method, path, { body, headers = {}, signal, raw = false } = {}) {
    const init = { method, headers: { "X-API-Key": this.key, ...headers }, signal };
    if (body !== undefined) {
      init.body = JSON.stringify(body);
      init.headers["Content-Type"] = "application/json";
    }
    let response;
    try {
      response = await fetch(path, init);
    } catch (e) {
      if (e.name === "AbortError") throw e;
      throw new ApiError(0, "NETWORK", `the API could not be reached (${e.message})`);
    }
    if (!response.ok) throw await failure(response);
    if (raw) return response;
    if (response.status === 204) return null;
    const type = response.headers.get("content-type") ?? "";
    return type.startsWith("application/json") ? response.json() : response.text();
  }

  /**
   * The same API with every call aborted by `signal` (unless a call brings its own): a view
   * gets one bound to its lifetime, so a view that was left stops at its next call instead of
   * drawing over the next view or opening what nobody sees (a shell, say).
   */
  bound(signal) {
    const bound = Object.create(this);
    bound.request = (method, path, options = {}) => this.request(method, path, { signal, ...options });
    return bound;
  }

  get(path, options) {
    return this.request("GET", path, options);
  }

  post(path, body, options = {}) {
    return this.request("POST", path, { ...options, body });
  }

  /** A page of a list endpoint: its items and `X-Total-Count`. */
  async page(path, params = {}) {
    const query = new URLSearchParams();
    for (const [k, v] of Object.entries(params)) if (v !== undefined && v !== "") query.set(k, v);
    const response = await this.request("GET", `${path}?${query}`, { raw: true });
    return { items: await response.json(), total: Number(response.headers.get("x-total-count") ?? 0) };
  }

  /**
   * Follows a job's output (`GET /v1/jobs/{id}/output?follow=true`, server-sent events) with
   * fetch and a stream parser, since EventSource cannot send the key header. Calls
   * `onEvent({event, id, data})` for each event; returns once `end` arrived. A dropped
   * connection resumes after the last id seen (`Last-Event-ID`), a few times, as EventSource
   * would.
   */
  async followJob(jobId, onEvent, signal) {
    let lastId = null;
    for (let attempt = 0; ; attempt++) {
      const headers = { Accept: "text/event-stream" };
      if (lastId !== null) headers["Last-Event-ID"] = lastId;
      let ended = false;
      try {
        const response = await this.request(
          "GET",
          `/v1/jobs/${encodeURIComponent(jobId)}/output?follow=true`,
          { headers, signal, raw: true },
        );
        for await (const event of readEvents(response.body)) {
          if (event.id !== undefined) lastId = event.id;
          if (event.event === "end") ended = true;
          onEvent(event);
          if (ended) return;
        }
      } catch (e) {
        if (e.name === "AbortError" || e instanceof ApiError || attempt >= 5) throw e;
      }
      if (signal?.aborted) return;
      await new Promise((resolve) => setTimeout(resolve, 500 * (attempt + 1)));
    }
  }
}

/** Parses a `text/event-stream` body into `{event, id, data}` (data parsed as JSON). */
export async function* readEvents(body) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buffer += value;
      let end;
      while ((end = buffer.search(/\r?\n\r?\n/)) >= 0) {
        const block = buffer.slice(0, end);
        buffer = buffer.slice(end).replace(/^\r?\n\r?\n/, "");
        const event = parseBlock(block);
        if (event) yield event;
      }
    }
  } finally {
    reader.releaseLock();
  }
}

function parseBlock(block) {
  const event = { event: "message", data: "" };
  let hasData = false;
  for (const line of block.split(/\r?\n/)) {
    if (line === "" || line.startsWith(":")) continue;
    const colon = line.indexOf(":");
    const field = colon < 0 ? line : line.slice(0, colon);
    const value = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
    if (field === "event") event.event = value;
    else if (field === "id") event.id = value;
    else if (field === "data") {
      event.data += (hasData ? "\n" : "") + value;
      hasData = true;
    }
  }
  if (!hasData) return null;
  try {
    event.data = JSON.parse(event.data);
  } catch {
    // Left as text.
  }
  return event;
}
