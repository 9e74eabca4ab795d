// Batches: the list, and one batch with a progress bar (jobs per status) that follows the
// batch live by polling `GET /v1/batches/{id}` until it ends; each target's output opens on
// demand and follows live (a few at a time: each is an HTTP stream of its own).
import { h, fill, when, short, badge } from "../dom.js";
import { pages } from "./devices.js";
import { outputPanel } from "./output.js";

const POLL_MS = 1000;
const PER_PAGE = 25;
/** Live output streams open at once on one batch page (browsers allow ~6 connections). */
const MAX_FOLLOWED = 3;
const ORDER = ["finished", "running", "queued", "failed", "timed_out", "canceled", "expired", "worker_lost", "terminated", "skipped"];

export async function batchList(main, ctx) {
  let page = 1;
  const body = h("tbody");
  const pager = h("div.pager");
  fill(main, h("h1", "Batches"),
    h("table.list#batches", h("thead", h("tr", ["Batch", "Status", "Command", "Targets", "Jobs", "Errors", "Requested"].map((t) => h("th", t)))), body),
    pager);
  async function refresh() {
    const { items, total } = await ctx.api.page("/v1/batches", { page, per_page: PER_PAGE });
    fill(body, items.length ? items.map((b) => h("tr",
      h("td", h("a", { href: `#/batches/${b.batch_id}` }, short(b.batch_id))),
      h("td", badge(b.status)),
      h("td", h("code", b.command)),
      h("td", b.selector),
      h("td", progressBar(b), ` ${b.job_count}`),
      h("td", String(b.errors)),
      h("td", when(b.requested_at)))) : h("tr", h("td.muted", { colspan: 7 }, "No batches yet.")));
    fill(pager, pages(total, page, (p) => { page = p; refresh().catch(ctx.showError); }, PER_PAGE));
  }
  await refresh();
  ctx.every(3000, () => refresh().catch(ctx.showError));
}

export async function batchDetail(main, ctx) {
  const [id] = ctx.params;
  fill(main, h("h1", "Batch ", h("code", id)));
  const view = h("div");
  main.append(view);
  await batchView(view, ctx, id);
}

/** A stacked bar, one segment per job status (and skipped targets). */
export function progressBar(batch) {
  const total = Math.max(1, batch.target_count ?? batch.job_count);
  const counts = batch.counts ?? {};
  const bar = h("div.progress", { role: "img" });
  const label = [];
  for (const status of ORDER) {
    const n = counts[status] ?? 0;
    if (!n) continue;
    const seg = h(`span.seg.seg-${status}`, { title: `${status}: ${n}` });
    seg.style.width = `${(100 * n) / total}%`; // CSSOM, which the CSP allows
    bar.append(seg);
    label.push(`${status} ${n}`);
  }
  bar.setAttribute("aria-label", label.join(", ") || "no jobs yet");
  return bar;
}

/** One batch, refreshed until it ends; returns after the first render. */
export async function batchView(el, ctx, id) {
  const summary = h("div.batch-summary");
  const targets = h("tbody");
  const pager = h("div.pager");
  const cancel = h("button.danger", { type: "button", onclick: async () => {
    try {
      await ctx.api.post(`/v1/batches/${encodeURIComponent(id)}/cancel`);
      await refresh();
    } catch (e) {
      ctx.showError(e);
    }
  } }, "Cancel batch");
  // Skipped targets have no job, so `/jobs` never pages them: they are listed apart, every one
  // of them (the batch's `targets` holds them all), paged here.
  const skippedTitle = h("h2.skipped-title", "Skipped targets");
  const skippedBody = h("tbody");
  const skippedPager = h("div.pager");
  const skippedTable = h("table.list.batch-skipped", h("thead", h("tr", ["Device", "Device id", "Reason"].map((t) => h("th", t)))), skippedBody);
  fill(el, summary, cancel,
    h("h2", "Targets"),
    h("table.list.batch-targets", h("thead", h("tr", ["Device", "Job", "Status", "Exit", "Duration", ""].map((t) => h("th", t)))), targets),
    pager,
    skippedTitle, skippedTable, skippedPager);
  let skippedPage = 1;
  const open = new Map(); // job id -> panel
  ctx.onCleanup(() => open.forEach((p) => p.stop()));
  let page = 1;
  let ended = false;

  async function refresh() {
    const [batch, jobs] = await Promise.all([
      ctx.api.get(`/v1/batches/${encodeURIComponent(id)}`),
      ctx.api.page(`/v1/batches/${encodeURIComponent(id)}/jobs`, { page, per_page: PER_PAGE, order_by: "asc" }),
    ]);
    ended = batch.status !== "in_progress";
    cancel.hidden = ended || !ctx.access.may("exec");
    el.dataset.status = batch.status;
    const counts = Object.entries(batch.counts ?? {}).filter(([, n]) => n > 0);
    fill(summary,
      h("p", badge(batch.status), " ", h("code", batch.command), " on ", batch.selector),
      progressBar(batch),
      h("p.counts", counts.map(([s, n]) => h("span.count", badge(s), ` ${n}`))),
      h("p.muted", `${batch.job_count} jobs, ${batch.skipped_count} skipped, ${batch.errors} errors (trips past ${batch.error_threshold}); `,
        `max concurrency ${batch.max_concurrency}; requested ${when(batch.requested_at)}`,
        batch.finished_at ? `; finished ${when(batch.finished_at)}` : ""));
    const names = new Map((batch.targets ?? []).map((t) => [t.job_id, t.name]));
    fill(targets,
      jobs.items.length ? jobs.items.map((job) => targetRow(job, names.get(job.job_id) ?? job.device_name ?? short(job.device_id)))
        : h("tr", h("td.muted", { colspan: 6 }, "No jobs.")));
    fill(pager, pages(jobs.total, page, (p) => { page = p; refresh().catch(ctx.showError); }, PER_PAGE));
    skipped = (batch.targets ?? []).filter((t) => t.skipped);
    showSkipped();
  }

  let skipped = [];
  function showSkipped() {
    const none = skipped.length === 0;
    skippedTitle.hidden = none;
    skippedTable.hidden = none;
    fill(skippedTitle, `Skipped targets (${skipped.length})`);
    const last = Math.max(1, Math.ceil(skipped.length / PER_PAGE));
    skippedPage = Math.min(skippedPage, last);
    const shown = skipped.slice((skippedPage - 1) * PER_PAGE, skippedPage * PER_PAGE);
    fill(skippedBody, shown.map((t) => h("tr", { dataset: { deviceId: t.device_id } },
      h("td", t.name), h("td", h("code", short(t.device_id))), h("td", badge(t.skipped, "skipped")))));
    fill(skippedPager, pages(skipped.length, skippedPage, (p) => { skippedPage = p; showSkipped(); }, PER_PAGE));
  }

  function targetRow(job, name) {
    const toggle = h("button", { type: "button", onclick: () => show(job.job_id) }, open.has(job.job_id) ? "Hide output" : "Output");
    const row = h("tr", { dataset: { jobId: job.job_id } },
      h("td", name),
      h("td", h("a", { href: `#/jobs/${job.job_id}` }, short(job.job_id))),
      h("td", badge(job.status)),
      h("td", job.exit_status ?? "—"),
      h("td", job.duration_ms === null ? "—" : `${job.duration_ms} ms`),
      h("td", toggle));
    const panel = open.get(job.job_id);
    return panel ? [row, h("tr.output-row", h("td", { colspan: 6 }, panel.el))] : row;
  }

  function show(jobId) {
    const panel = open.get(jobId);
    if (panel) {
      panel.stop();
      open.delete(jobId);
    } else {
      if (open.size >= MAX_FOLLOWED) {
        const [oldest, p] = open.entries().next().value;
        p.stop();
        open.delete(oldest);
      }
      const fresh = outputPanel(ctx.api, ctx.showError);
      open.set(jobId, fresh);
      fresh.follow(jobId, ctx.signal);
    }
    refresh().catch(ctx.showError);
  }

  await refresh();
  const timer = setInterval(() => {
    if (ended) {
      clearInterval(timer);
      return;
    }
    refresh().catch(ctx.showError);
  }, POLL_MS);
  ctx.onCleanup(() => clearInterval(timer));
}
