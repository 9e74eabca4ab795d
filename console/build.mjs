// Bundles the console into dist/: one minified script and one stylesheet with content hashes
// in their names (served with a long cache), and index.html naming them (served uncached).
// Run through ops/console-build, which installs node_modules first when they are stale.
import { build } from "esbuild";
import { mkdir, readFile, rm, writeFile } from "node:fs/promises";
import path from "node:path";
import { fileURLToPath } from "node:url";

const here = path.dirname(fileURLToPath(import.meta.url));
const dist = path.join(here, "dist");
const assets = path.join(dist, "assets");

await rm(dist, { recursive: true, force: true });
await mkdir(assets, { recursive: true });

const result = await build({
  entryPoints: [path.join(here, "src/main.js")],
  bundle: true,
  minify: true,
  format: "esm",
  target: ["chrome110", "firefox115", "safari16"],
  outdir: assets,
  entryNames: "[name]-[hash]",
  assetNames: "[name]-[hash]",
  // Fonts and images referenced from CSS become files of their own, never inline data.
  loader: { ".woff": "file", ".woff2": "file", ".ttf": "file", ".svg": "file", ".png": "file" },
  metafile: true,
  legalComments: "linked",
  logLevel: "warning",
});

// The entry's outputs: main-<hash>.js and the CSS it imports, main-<hash>.css.
const outputs = Object.entries(result.metafile.outputs);
const name = (suffix) => {
  const found = outputs.find(([file, meta]) => meta.entryPoint && file.endsWith(suffix))
    ?? outputs.find(([file]) => file.endsWith(suffix) && path.basename(file).startsWith("main-"));
  if (!found) throw new Error(`esbuild produced no ${suffix} output`);
  return path.basename(found[0]);
};
const script = name(".js");
const style = name(".css");

const template = await readFile(path.join(here, "src/index.html"), "utf8");
const html = template
  .replace("{{style}}", `/console/assets/${style}`)
  .replace("{{script}}", `/console/assets/${script}`);
if (html.includes("{{")) throw new Error("index.html has an unfilled placeholder");
await writeFile(path.join(dist, "index.html"), html);
console.log(`console built: ${script}, ${style}`);
