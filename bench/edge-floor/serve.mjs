// Serves bench/edge-floor/worker.mjs in workerd through Miniflare's API, like
// scripts/edge-serve.mjs serves the edge worker.
//
//   node bench/edge-floor/serve.mjs <port> <stream|pipe>
//
// Prints `RIDECAST_EDGE_READY <url>` once workerd answers; runs until killed.
import path from "node:path";
import { fileURLToPath } from "node:url";
import { Miniflare } from "miniflare";

const [port, mode] = process.argv.slice(2);
if (!port || !["stream", "pipe"].includes(mode)) {
  console.error("usage: node bench/edge-floor/serve.mjs <port> <stream|pipe>");
  process.exit(2);
}
const here = path.dirname(fileURLToPath(import.meta.url));
process.chdir(here);
const mf = new Miniflare({
  modules: true,
  scriptPath: path.join(here, "worker.mjs"),
  compatibilityDate: "2026-04-01",
  durableObjects: { HUB: { className: "Hub", useSQLite: true } },
  bindings: { MODE: mode },
  host: "127.0.0.1",
  port: Number(port),
});
console.log(`RIDECAST_EDGE_READY ${(await mf.ready).href}`);
