// Drives player.html in headless Chromium (the system's, never a downloaded one) and prints
// what the players did as one JSON line on stdout.
//
// node run.mjs --url URL --seconds N --screenshot FILE [--chromium PATH]
//
// Watches until every player has played `seconds` past its startup (its first `playing`), or
// until startup takes longer than `--startup-timeout` seconds (default 60). The Rust test
// asserts on the output; this script only reports.

import { chromium } from "playwright-core";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";

const { values: opts } = parseArgs({
  options: {
    url: { type: "string" },
    seconds: { type: "string", default: "60" },
    "startup-timeout": { type: "string", default: "60" },
    screenshot: { type: "string" },
    chromium: { type: "string", default: "/usr/bin/chromium" },
  },
});
if (!opts.url || !opts.screenshot) {
  console.error("usage: node run.mjs --url URL --seconds N --screenshot FILE [--chromium PATH]");
  process.exit(2);
}
const watchMs = Number(opts.seconds) * 1000;
const startupMs = Number(opts["startup-timeout"]) * 1000;

const profile = mkdtempSync(join(tmpdir(), "shoal-chromium-"));
const context = await chromium.launchPersistentContext(profile, {
  executablePath: opts.chromium,
  headless: true,
  chromiumSandbox: false,
  args: [
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-quic",
    "--autoplay-policy=no-user-gesture-required",
  ],
  viewport: { width: 1380, height: 540 },
});
const result = { console: [], samples: [] };
try {
  const page = context.pages()[0] ?? (await context.newPage());
  page.on("console", (m) => {
    if (m.type() === "error" || m.type() === "warning") result.console.push(`${m.type()}: ${m.text()}`);
  });
  page.on("pageerror", (e) => result.console.push(`pageerror: ${e.message}`));
  await page.goto(opts.url);
  const state = () => page.evaluate(() => window.shoal);

  // Startup: every player plays (or the deadline passes).
  const t0 = Date.now();
  let s = await state();
  while (!s.players.every((p) => p.playing) && Date.now() - t0 < startupMs) {
    await page.waitForTimeout(250);
    s = await state();
  }
  result.startup_seconds = (Date.now() - t0) / 1000;
  result.start = s.players.map((p) => p.currentTime);
  const t1 = Date.now();
  if (s.players.every((p) => p.playing)) {
    // Watch playback, keeping a sample every second for the report.
    while (Date.now() - t1 < watchMs) {
      await page.waitForTimeout(1000);
      s = await state();
      result.samples.push(s.players.map((p) => p.currentTime));
    }
  }
  result.watched_seconds = (Date.now() - t1) / 1000;
  result.codecs = s.codecs;
  result.players = s.players;
  await page.screenshot({ path: opts.screenshot });
} finally {
  await context.close();
  rmSync(profile, { recursive: true, force: true });
}
console.log(JSON.stringify(result));
