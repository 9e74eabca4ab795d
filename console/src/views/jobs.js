// Jobs: the tenant's list (paged, filtered by status) and one job: status, exit, timing,
// attempts and output (followed live while the job runs).
import { h, fill, when, short, badge, duration } from "../dom.js";
import { pages } from "./devices.js";
import { outputPanel } from "./output.js";

const PER_PAGE = 25;
const STATUSES = ["", "queued", "running", "finished", "failed", "timed_out", "canceled", "expired", "worker_lost", "terminated"];
const ENDED = (status) => status !== "queued" && status !== "running";

export async function jobList(main, ctx) {
  let page = Number(ctx.query.get("page") ?? 1);
  const status = h("select#job-status", { onchange: () => { page = 1; refresh().catch(ctx.showError); } },
    STATUSES.map((s) => h("option", { value: s, selected: s === (ctx.query.get("status") ?? "") }, s || "any status")));
  const body = h("tbody");
  const pager = h("div.pager");
  const count = h("span.muted");
  fill(main,
    h("div.toolbar", h("h1", "Jobs"), h("label", { for: "job-status" }, "Status "), status, count),
    h("table.list#jobs", h("thead", h("tr", ["Job", "Status", "Command", "Device", "Exit", "Duration", "Requested"].map((t) => h("th", t)))), body),
    pager);

  async function refresh() {
    const { items, total } = await ctx.api.page("/v1/jobs", {
      page, per_page: PER_PAGE, status: status.value, device_id: ctx.query.get("device_id") ?? undefined,
    });
    fill(count, ` ${total} job${total === 1 ? "" : "s"}`);
    fill(body, items.length ? items.map((j) => h("tr", { dataset: { jobId: j.job_id } },
      h("td", h("a", { href: `#/jobs/${j.job_id}` }, short(j.job_id))),
      h("td", badge(j.status)),
      h("td", h("code", (j.argv ?? []).join(" "))),
      h("td.device", { title: j.device_id }, j.device_name ?? short(j.device_id)),
      h("td", j.exit_status ?? j.exit_signal ?? "—"),
      h("td", duration(j.duration_ms)),
      h("td", when(j.requested_at)))) : h("tr", h("td.muted", { colspan: 7 }, "No jobs.")));
    fill(pager, pages(total, page, (p) => { page = p; refresh().catch(ctx.showError); }, PER_PAGE));
  }
  await refresh();
  ctx.every(3000, () => refresh().catch(ctx.showError));
}

export async function jobDetail(main, ctx) {
  const [id] = ctx.params;
  const facts = h("dl.facts");
  const output = h("div.job-output");
  const cancel = h("button.danger", { type: "button", onclick: async () => {
    try {
      await ctx.api.post(`/v1/jobs/${encodeURIComponent(id)}/cancel`);
    } catch (e) {
      ctx.showError(e);
    }
  } }, "Cancel job");
  fill(main, h("h1", "Job ", h("code", id)), facts, cancel, h("h2", "Output"), output);

  async function load() {
    const job = await ctx.api.get(`/v1/jobs/${encodeURIComponent(id)}`);
    main.dataset.status = job.status;
    cancel.hidden = ENDED(job.status) || !ctx.access.may("exec");
    const row = (term, ...value) => [h("dt", term), h("dd", ...value)];
    fill(facts,
      row("Status", badge(job.status), job.is_ok ? " ok" : ""),
      row("Command", h("code", (job.argv ?? []).join(" "))),
      row("Device", job.device_name ? [h("strong", job.device_name), " "] : "", h("code", job.device_id), " ", h("a", { href: `#/sessions/${job.job_id}` }, "session")),
      job.batch_id ? row("Batch", h("a", { href: `#/batches/${job.batch_id}` }, job.batch_id)) : [],
      row("Exit", job.exit_status ?? "—", job.exit_signal ? ` (signal ${job.exit_signal}${job.exit_signal_message ? `: ${job.exit_signal_message}` : ""})` : ""),
      job.error_code ? row("Error", `${job.error_code}: ${job.error_message ?? ""}`) : [],
      row("Requested", when(job.requested_at)),
      row("Started", when(job.started_at)),
      row("Finished", when(job.finished_at)),
      row("Duration", duration(job.duration_ms)),
      row("Attempts", String(job.attempts), job.attempt_errors?.length ? ` (${job.attempt_errors.map((a) => a.code ?? a.error_code ?? "").join(", ")})` : ""),
      row("Worker", job.worker ?? "—"),
      row("Actor", job.actor ?? "—"),
      job.output_redacted ? row("Output", "redacted (a sensitive template: owners and administrators read it)") : []);
    return job;
  }

  const job = await load();
  if (ENDED(job.status)) {
    fill(output, h("pre.output", job.stdout ?? "", h("span.stderr", job.stderr ?? "")),
      job.stdout_truncated || job.stderr_truncated ? h("p.muted", "Stored output was truncated at 1 MiB.") : []);
  } else {
    const panel = outputPanel(ctx.api, ctx.showError);
    fill(output, panel.el);
    ctx.onCleanup(() => panel.stop());
    await panel.follow(id, ctx.signal);
    if (!ctx.signal.aborted) await load().catch(ctx.showError);
  }
}
