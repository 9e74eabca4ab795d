// xterm.js writes the CSS it computes at run time (theme colours, cell sizes) into <style>
// elements. The console's Content-Security-Policy has no 'unsafe-inline' for styles, so the
// browser would refuse those elements' text and the terminal would render without them.
// Instead each <style> element the page creates keeps its text in a constructable stylesheet
// adopted by the document: CSSOM, which CSP allows, while the element itself stays empty (the
// policy allows exactly the empty inline style, by its hash; see api/src/console.rs).
// (Only xterm.js creates <style> elements in this page.)

const sheets = new Map(); // <style> element -> its adopted sheet

export function adoptCreatedStyles(doc = document) {
  if (doc.__sshqAdoptsStyles) return;
  doc.__sshqAdoptsStyles = true;
  const create = doc.createElement.bind(doc);
  doc.createElement = (tag, options) => {
    const el = create(tag, options);
    if (String(tag).toLowerCase() === "style") adopt(doc, el);
    return el;
  };
}

function adopt(doc, el) {
  const sheet = new CSSStyleSheet();
  let text = "";
  sheets.set(el, sheet);
  doc.adoptedStyleSheets = [...doc.adoptedStyleSheets, sheet];
  Object.defineProperty(el, "textContent", {
    configurable: true,
    get: () => text,
    set: (value) => {
      text = value === null || value === undefined ? "" : String(value);
      sheet.replaceSync(text);
    },
  });
}

/** Drops the sheets of <style> elements no longer in the document (a disposed terminal's). */
export function dropDetachedStyles(doc = document) {
  const gone = [];
  for (const [el, sheet] of sheets) {
    if (!el.isConnected) {
      gone.push(sheet);
      sheets.delete(el);
    }
  }
  if (gone.length) doc.adoptedStyleSheets = doc.adoptedStyleSheets.filter((s) => !gone.includes(s));
}
