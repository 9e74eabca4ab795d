// A job's output as it arrives: stdout and stderr chunks in order (stderr marked), then the
// job's end (status, exit). Used by the run page, job detail and batch detail.
import { h, fill, badge } from "../dom.js";

export function outputPanel(api, showError) {
  const pre = h("pre.output", { "aria-live": "polite" });
  const status = h("div.output-status", badge("waiting", "queued"));
  const el = h("div.output-panel", status, pre);
  let controller = null;

  function end(job) {
    const parts = [badge(job.status)];
    if (job.exit_status !== null && job.exit_status !== undefined) parts.push(` exit ${job.exit_status}`);
    if (job.exit_signal) parts.push(` signal ${job.exit_signal}`);
    if (job.error_code) parts.push(` ${job.error_code}: ${job.error_message ?? ""}`);
    if (job.duration_ms !== null && job.duration_ms !== undefined) parts.push(` in ${job.duration_ms} ms`);
    fill(status, parts);
    el.dataset.ended = job.status;
  }

  return {
    el,
    /** Streams `jobId`'s output into the panel until the job ends (or `stop`). */
    async follow(jobId, signal) {
      controller?.abort();
      controller = new AbortController();
      const stop = () => controller.abort();
      signal?.addEventListener("abort", stop, { once: true });
      pre.replaceChildren();
      delete el.dataset.ended;
      fill(status, badge("following", "running"), " live output…");
      try {
        await api.followJob(jobId, (event) => {
          if (event.event === "stdout" || event.event === "stderr") {
            const text = event.data?.data ?? "";
            pre.append(event.event === "stderr" ? h("span.stderr", text) : document.createTextNode(text));
            pre.scrollTop = pre.scrollHeight;
          } else if (event.event === "end") {
            end(event.data);
          }
        }, controller.signal);
      } catch (e) {
        if (e.name !== "AbortError") {
          fill(status, badge("error", "failed"), " the output stream failed");
          showError(e);
        }
      } finally {
        signal?.removeEventListener("abort", stop);
      }
    },
    stop() {
      controller?.abort();
    },
  };
}
