// Devices with their live presence (the list is polled every few seconds) and tags; a tag
// filter (all given tags must match, as the API's `tags` filter).
import { h, fill, when, badge } from "../dom.js";

const POLL_MS = 3000;
const PER_PAGE = 100;

export async function devices(main, ctx) {
  const tagInput = h("input", {
    id: "tag-filter",
    type: "search",
    placeholder: "tags, comma-separated",
    value: ctx.query.get("tags") ?? "",
  });
  const table = h("tbody");
  const count = h("span.muted");
  let page = 1;
  const pager = h("div.pager");
  fill(
    main,
    h("div.toolbar",
      h("h1", "Devices"),
      h("form.inline", {
        onsubmit: (e) => {
          e.preventDefault();
          page = 1;
          refresh();
        },
      }, h("label", { for: "tag-filter" }, "Tag"), tagInput, h("button", { type: "submit" }, "Filter")),
      count),
    ctx.access.notice("exec", "shell"),
    h("table.list#devices",
      h("thead", h("tr", ["Name", "Host", "Status", "Online", "Last seen", "Tags", ""].map((t) => h("th", t)))),
      table),
    pager,
  );

  async function refresh() {
    const tags = tagInput.value.split(",").map((t) => t.trim()).filter(Boolean).join(",");
    const { items, total } = await ctx.api.page("/v1/devices", {
      tags,
      page,
      per_page: PER_PAGE,
      sort_by: "name",
      order_by: "asc",
    });
    fill(count, `${total} device${total === 1 ? "" : "s"}`);
    fill(table, items.length ? items.map(row) : h("tr", h("td.muted", { colspan: 7 }, "No devices match.")));
    fill(pager, pages(total, page, (p) => { page = p; refresh().catch(ctx.showError); }));
  }

  function row(d) {
    const presence = d.presence ?? (d.online ? "online" : "offline");
    return h("tr", { dataset: { deviceId: d.id, name: d.name } },
      h("td", h("strong", d.name)),
      h("td", `${d.username}@${d.host}:${d.port}`),
      h("td", badge(d.status)),
      h("td.presence", badge(presence)),
      h("td", when(d.last_seen_at)),
      h("td", d.tags.map((t) => h("a.tag", { href: `#/devices?tags=${encodeURIComponent(t)}`, onclick: (e) => {
        e.preventDefault();
        tagInput.value = t;
        page = 1;
        refresh().catch(ctx.showError);
      } }, t))),
      h("td.actions",
        ctx.access.action("exec", h("a.button", { href: `#/run?device=${d.id}` }, "Run")),
        ctx.access.action("shell", h("a.button", { href: `#/shell/${d.id}` }, "Shell")),
        h("a.button", { href: `#/sessions?device_id=${d.id}` }, "Sessions")),
    );
  }

  await refresh();
  ctx.every(POLL_MS, () => refresh().catch(ctx.showError));
}

/** Page links for a list of `total` items at PER_PAGE a page. */
export function pages(total, page, go, perPage = PER_PAGE) {
  const last = Math.max(1, Math.ceil(total / perPage));
  if (last === 1) return [];
  return [
    h("button", { type: "button", disabled: page <= 1, onclick: () => go(page - 1) }, "‹ Previous"),
    h("span.muted", ` page ${page} of ${last} `),
    h("button", { type: "button", disabled: page >= last, onclick: () => go(page + 1) }, "Next ›"),
  ];
}
