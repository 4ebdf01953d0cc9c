// Bundles src/main.jsx into OUTDIR/app.js (minified, one file, no source map) and copies the
// other static files beside it. Fixed names: cmake/embed-ui.cmake embeds exactly these.
import { build } from "esbuild";
import { copyFileSync, mkdirSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const out = process.argv[2];
if (!out) {
  console.error("usage: node build.mjs OUTDIR");
  process.exit(2);
}
mkdirSync(out, { recursive: true });
await build({
  entryPoints: [join(here, "src", "main.jsx")],
  outfile: join(out, "app.js"),
  bundle: true,
  minify: true,
  format: "iife",
  target: ["es2020"],
  jsx: "automatic",
  jsxImportSource: "preact",
  legalComments: "none",
  logLevel: "warning",
});
for (const [from, to] of [["index.html", "index.html"], ["style.css", "app.css"], ["icon.svg", "icon.svg"]])
  copyFileSync(join(here, from), join(out, to));
