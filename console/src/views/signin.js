// Sign in with an API key; the key is checked with a real call before anything is shown.
import { h } from "../dom.js";

export function signIn({ onKey }) {
  const input = h("input", {
    id: "api-key",
    type: "password",
    autocomplete: "off",
    spellcheck: "false",
    required: true,
    placeholder: "API key",
  });
  const button = h("button", { type: "submit" }, "Sign in");
  const form = h(
    "form.card.signin",
    {
      onsubmit: async (event) => {
        event.preventDefault();
        button.disabled = true;
        const ok = await onKey(input.value.trim());
        button.disabled = false;
        if (ok) input.value = "";
      },
    },
    h("h1", "Sign in"),
    h("p.muted", "Use an API key of your tenant. It is kept only for this browser tab."),
    h("label", { for: "api-key" }, "API key"),
    input,
    button,
  );
  queueMicrotask(() => input.focus());
  return form;
}
