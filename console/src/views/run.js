// Run a command line or a template on one device (a job, its output followed live) or on
// every device with some tags (a batch through `POST /v1/exec`, shown with its progress).
import { h, fill } from "../dom.js";
import { outputPanel } from "./output.js";
import { batchView } from "./batches.js";

/** A template's parameters, in order, from its `words`: `{name, kind, optional}`. */
export function templateParams(template) {
  return (template.words ?? [])
    .filter((w) => w.type === "param" || w.type === "option")
    .map((w) => ({ name: w.name, kind: w.kind, optional: w.type === "option" }));
}

export async function run(main, ctx) {
  if (!ctx.access.may("exec")) {
    fill(main, h("h1", "Run a command"), h("p.notice.access#run-denied", { role: "note" }, ctx.access.why("exec")));
    return;
  }
  const [{ items: deviceItems }, templates] = await Promise.all([
    ctx.api.page("/v1/devices", { per_page: 100, sort_by: "name", order_by: "asc" }),
    ctx.api.get("/v1/templates"),
  ]);
  // The list offers the first 100 devices by name (the search below finds the others); a
  // device asked for by id (the devices page's Run link) is offered too wherever it sorts.
  const wanted = ctx.query.get("device");
  if (wanted && !deviceItems.some((d) => d.id === wanted)) {
    deviceItems.unshift(await ctx.api.get(`/v1/devices/${encodeURIComponent(wanted)}`));
  }
  const radio = (name, value, label, checked) =>
    h("label.choice", h("input", { type: "radio", name, value, checked, onchange: sync }), ` ${label}`);

  const option = (d) => h("option", { value: d.id, selected: d.id === wanted }, `${d.name} (${d.host})`);
  const deviceSelect = h("select", { id: "run-device" }, deviceItems.map(option));
  // The list holds 100 devices at a time: typing part of a name asks the API for the first
  // 100 that match (`name` filter, any case), a moment after the last keystroke.
  let findTimer = null;
  let findRound = 0;
  const deviceFind = h("input", {
    id: "run-device-find", type: "search", placeholder: "find by name", autocomplete: "off", size: 16,
    oninput: () => {
      clearTimeout(findTimer);
      findTimer = setTimeout(async () => {
        const round = ++findRound;
        const text = deviceFind.value.trim();
        try {
          const { items } = await ctx.api.page("/v1/devices",
            { per_page: 100, sort_by: "name", order_by: "asc", ...(text ? { name: text } : {}) });
          if (round !== findRound) return; // a later search answered or will answer
          fill(deviceSelect, items.length ? items.map(option) : h("option", { value: "", disabled: true }, "no device matches"));
        } catch (e) {
          ctx.showError(e);
        }
      }, 250);
    },
  });
  ctx.onCleanup(() => clearTimeout(findTimer));
  const tagInput = h("input", { id: "run-tags", placeholder: "tags, comma-separated (all must match)", value: ctx.query.get("tags") ?? "" });
  const concurrency = h("input", { id: "run-concurrency", value: "10", size: 6, title: "10, 10% or a ramp like 1,5,20%" });
  const maxErrors = h("input", { id: "run-max-errors", value: "0", size: 6 });
  const command = h("input", { id: "run-command", placeholder: "uptime", autocomplete: "off", spellcheck: "false" });
  const templateSelect = h("select", { id: "run-template", onchange: sync },
    templates.templates.map((t) => h("option", { value: t.name }, `${t.name} — ${t.usage}`)));
  const args = h("div.args");
  const timeout = h("input", { id: "run-timeout", type: "number", min: 1, max: 120, value: 30 });
  const result = h("div.result#run-result");

  const onTag = () => main.querySelector("input[name=target]:checked").value === "tag";
  const byTemplate = () => main.querySelector("input[name=what]:checked").value === "template";

  function sync() {
    main.querySelector(".target-device").hidden = onTag();
    main.querySelector(".target-tag").hidden = !onTag();
    main.querySelector(".what-command").hidden = byTemplate();
    main.querySelector(".what-template").hidden = !byTemplate();
    const chosen = templates.templates.find((t) => t.name === templateSelect.value);
    const params = chosen ? templateParams(chosen) : [];
    const old = Object.fromEntries([...args.querySelectorAll("input")].map((i) => [i.name, i.value]));
    fill(args, params.map((p) => h("label", `${p.name} `,
      h("input", { name: p.name, value: old[p.name] ?? "", placeholder: p.optional ? `${p.kind} (optional)` : p.kind }))));
  }

  function body() {
    const b = { timeout: Number(timeout.value) };
    if (byTemplate()) {
      b.template = templateSelect.value;
      b.args = Object.fromEntries([...args.querySelectorAll("input")].filter((i) => i.value !== "").map((i) => [i.name, i.value]));
    } else {
      b.command = command.value;
    }
    return b;
  }

  /** `10`, `"10%"` or a ramp `[1, 5, "20%"]`, as the API takes it. */
  function rate(text) {
    const one = (t) => (/^\d+$/.test(t.trim()) ? Number(t.trim()) : t.trim());
    return text.includes(",") ? text.split(",").map(one) : one(text);
  }

  let panel = null;
  ctx.onCleanup(() => panel?.stop());

  async function submit(event) {
    event.preventDefault();
    ctx.hideError();
    const button = main.querySelector("button[type=submit]");
    button.disabled = true;
    try {
      if (onTag()) {
        const tags = tagInput.value.split(",").map((t) => t.trim()).filter(Boolean);
        const accepted = await ctx.api.post("/v1/exec", {
          ...body(),
          targets: { tags },
          max_concurrency: rate(concurrency.value),
          max_errors: rate(maxErrors.value),
        });
        fill(result, h("p", "Batch ", h("a", { href: `#/batches/${accepted.batch_id}` }, accepted.batch_id),
          ` — ${accepted.job_count} job(s), ${accepted.skipped_count} skipped`));
        const view = h("div");
        result.append(view);
        await batchView(view, ctx, accepted.batch_id);
      } else {
        const accepted = await ctx.api.post(`/v1/devices/${encodeURIComponent(deviceSelect.value)}/exec`, body());
        panel = outputPanel(ctx.api, ctx.showError);
        fill(result, h("p", "Job ", h("a.job-link", { href: `#/jobs/${accepted.job_id}` }, accepted.job_id)), panel.el);
        panel.follow(accepted.job_id, ctx.signal);
      }
    } catch (e) {
      ctx.showError(e);
    } finally {
      button.disabled = false;
    }
  }

  fill(main,
    h("h1", "Run a command"),
    h("form.card.run#run-form", { onsubmit: submit },
      h("fieldset", h("legend", "On"),
        radio("target", "device", "a device", !ctx.query.get("tags")),
        radio("target", "tag", "every device with tags", Boolean(ctx.query.get("tags"))),
        h("div.target-device", h("label", { for: "run-device" }, "Device "), deviceSelect, " ", deviceFind),
        h("div.target-tag", h("label", { for: "run-tags" }, "Tags "), tagInput,
          h("label", { for: "run-concurrency" }, " max concurrency "), concurrency,
          h("label", { for: "run-max-errors" }, " max errors "), maxErrors)),
      h("fieldset", h("legend", "Run"),
        radio("what", "command", "a command line", true),
        radio("what", "template", `a template (policy: ${templates.mode})`, false),
        h("div.what-command", h("label", { for: "run-command" }, "Command "), command,
          h("p.muted", "Words are passed as arguments, never to a shell; quote a word as in a shell.")),
        h("div.what-template", h("label", { for: "run-template" }, "Template "), templateSelect, args)),
      h("label", { for: "run-timeout" }, "Timeout (s) "), timeout,
      h("button", { type: "submit" }, "Run")),
    result,
  );
  sync();
}
