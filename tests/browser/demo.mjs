#!/usr/bin/env node
// The live demo in a real browser: Debian's headless Chromium driven by playwright-core.
//
//   node tests/browser/demo.mjs <baseUrl> <outDir>
//
// Against an origin in dev mode with simulated drivers (tests/tests/demo_browser.rs starts one
// with `--simulate 12 --offer-expiry-ms 3000`), it plays the README's tour:
//   1. the index page links the three pages; the rider page draws the city and shows downtown's
//      surge from its SSE stream,
//   2. the rider requests a ride and sees `driver_assigned` (asking again after `no_driver`),
//   3. the assigned driver's marker moves (its drawn position changes, from pushed locations),
//   4. the driver greets in the chat, the rider writes, the simulated driver's reply comes back,
//   5. the fleet page shows the drivers moving, the rider's driver busy and the origin's counters
//      (three more rides are requested through the API so that the fleet has work to show),
//   6. the rider cancels; a human driver (the driver page) goes online on a new pickup, gets the
//      next ride's offer with its countdown, accepts it, and the two pages chat (with typing).
// Screenshots go to <outDir> (demo-rider.png, demo-fleet.png, demo-driver.png; failure-*.png when
// a step fails). Exits 0 when every step passed, 1 with a message naming the step otherwise.
//
// Environment: RIDECAST_CHROMIUM (default /usr/bin/chromium). Playwright's own browsers are never
// downloaded or used.

import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { chromium } from 'playwright-core';

const [baseArg, outDir] = process.argv.slice(2);
if (!baseArg || !outDir) {
  console.error('usage: node tests/browser/demo.mjs <baseUrl> <outDir>');
  process.exit(2);
}
const base = baseArg.replace(/\/+$/, '');
const executablePath = process.env.RIDECAST_CHROMIUM || '/usr/bin/chromium';
// Everything must be done well inside the Rust test's own limit.
const OVERALL_LIMIT_MS = 150_000;
// Tall enough for the rider's whole panel (ride and chat) in the README's screenshot.
const VIEWPORT = { width: 1440, height: 1000 };

const started = Date.now();
const elapsed = () => `${((Date.now() - started) / 1000).toFixed(1)}s`;
const log = (message) => console.log(`[${elapsed()}] ${message}`);

/** A failed expectation: the step that failed and what was expected. */
class StepFailure extends Error {}

let currentStep = 'starting';
function step(name) {
  currentStep = name;
  log(`step: ${name}`);
}

/** Waits until `probe()` (run in the page) returns a truthy value; fails with `expected`. */
async function waitFor(page, expected, probe, arg, timeout = 20_000) {
  try {
    const handle = await page.waitForFunction(probe, arg, { timeout, polling: 100 });
    return await handle.jsonValue();
  } catch (error) {
    const pageError = await page.evaluate(() => document.body?.dataset.error).catch(() => undefined);
    throw new StepFailure(
      `expected ${expected} within ${timeout / 1000} s${pageError ? `; the page reports: ${pageError}` : ''} (${error.message.split('\n')[0]})`,
    );
  }
}

/** The centre of an element on screen, or null while it is not drawn. */
async function centre(page, selector) {
  return page.evaluate((sel) => {
    const node = document.querySelector(sel);
    if (!node || node.style.display === 'none') return null;
    const r = node.getBoundingClientRect();
    return r.width > 0 ? { x: r.x + r.width / 2, y: r.y + r.height / 2 } : null;
  }, selector);
}

async function openPage(context, path, errors) {
  const page = await context.newPage();
  page.on('pageerror', (error) => errors.push(`${path}: uncaught ${error.message}`));
  page.on('console', (message) => {
    if (message.type() === 'error') log(`  console error on ${path}: ${message.text()}`);
  });
  const response = await page.goto(`${base}${path}`, { waitUntil: 'domcontentloaded' });
  if (!response || response.status() !== 200) {
    throw new StepFailure(`GET ${path} answered ${response?.status()} (is the origin in dev mode?)`);
  }
  await waitFor(page, `${path} to start (body[data-ready])`, () => document.body.dataset.ready === 'true' || document.body.dataset.error, undefined, 15_000);
  const error = await page.evaluate(() => document.body.dataset.error);
  if (error) throw new StepFailure(`${path} failed to start: ${error}`);
  return page;
}

const rideStatus = (page) => page.getAttribute('[data-testid="ride-status"]', 'data-status');

/** Requests a ride on the rider page and waits for a driver; asks again if nobody took it. */
async function requestUntilAssigned(rider, attempts = 3) {
  for (let attempt = 1; attempt <= attempts; attempt++) {
    await rider.click('[data-testid="request-ride"]');
    const status = await waitFor(
      rider,
      'the ride status to become driver_assigned or a later step (or no_driver)',
      () => {
        const s = document.querySelector('[data-testid="ride-status"]').dataset.status;
        // A simulated driver near the pickup may report driver_arrived before the next poll.
        if (['driver_assigned', 'driver_arrived', 'in_progress'].includes(s)) return 'driver_assigned';
        return s === 'no_driver' || s === 'cancelled' ? s : null;
      },
      undefined,
      45_000,
    );
    if (status === 'driver_assigned') return attempt;
    log(`  ride ended ${status} (attempt ${attempt}); requesting again`);
    await rider.click('[data-testid="request-ride"]'); // "Try again" resets the form
  }
  throw new StepFailure(`no driver was assigned in ${attempts} requests`);
}

/** Sends `text` in a page's chat and waits for the server's echo (the message stored). */
async function sendChat(page, text) {
  await page.fill('[data-testid="chat-input"]', text);
  await page.click('[data-testid="chat-send"]');
  await waitFor(
    page,
    `the echo of "${text}" (chat message stored, with a server id)`,
    (t) => [...document.querySelectorAll('[data-testid="chat-message"].mine')].some((m) => m.dataset.id && m.firstChild.textContent === t),
    text,
    15_000,
  );
}

/** Waits for a message from `from` that comes after the one with text `after` in the chat's order. */
async function waitForReply(page, from, after, expected, timeout = 15_000) {
  return waitFor(
    page,
    expected,
    ([who, mine]) => {
      const items = [...document.querySelectorAll('[data-testid="chat-message"]')];
      const at = items.findIndex((m) => m.firstChild.textContent === mine);
      const reply = at >= 0 ? items.slice(at + 1).find((m) => m.dataset.from === who && m.dataset.id) : null;
      return reply ? reply.firstChild.textContent : null;
    },
    [from, after],
    timeout,
  );
}

async function run() {
  mkdirSync(outDir, { recursive: true });
  step(`launching ${executablePath}`);
  const browser = await chromium.launch({
    executablePath,
    headless: true,
    // Root in a container: no sandbox; a small /dev/shm: use /tmp.
    args: ['--no-sandbox', '--disable-dev-shm-usage', '--disable-gpu'],
  });
  const errors = [];
  const pages = {};
  try {
    const context = await browser.newContext({ viewport: VIEWPORT, deviceScaleFactor: 1 });

    step('the index page links to the rider, driver and fleet pages');
    const home = await openPage(context, '/demo/', errors);
    for (const which of ['rider', 'driver', 'fleet']) {
      const href = await home.getAttribute(`[data-testid="link-${which}"]`, 'href');
      if (!href) throw new StepFailure(`the index page has no link to the ${which} page`);
    }
    await home.close();

    step('the rider page draws the city and gets a rider token');
    const rider = (pages.rider = await openPage(context, '/demo/rider', errors));
    const streets = await rider.locator('#map .street').count();
    if (streets < 10) throw new StepFailure(`expected the city's streets on the map, found ${streets}`);
    await waitFor(rider, 'the Request ride button to be enabled', () => !document.querySelector('[data-testid="request-ride"]').disabled);
    const surge = await waitFor(
      rider,
      "downtown's surge on the rider's badge (from /api/sse/surge/downtown)",
      () => document.querySelector('[data-testid="surge-badge"]').dataset.multiplier,
      undefined,
      25_000,
    );
    log(`  downtown surge ×${surge}`);

    step('request a ride and wait for driver_assigned');
    const attempts = await requestUntilAssigned(rider);
    const driverId = await rider.textContent('[data-testid="driver-name"]');
    log(`  assigned to ${driverId} (request ${attempts})`);
    if (!/^sim-/.test(driverId ?? '')) throw new StepFailure(`expected a simulated driver (sim-NN) to take the ride, got ${driverId}`);

    step("the driver's marker appears and moves");
    const marker = '[data-testid="driver-marker"]';
    await waitFor(rider, "the driver's marker on the map (its first location)", (sel) => {
      const node = document.querySelector(sel);
      return node && node.style.display !== 'none' && node.getBoundingClientRect().width > 0;
    }, marker, 20_000);
    const first = await centre(rider, marker);
    await waitFor(
      rider,
      "the driver's marker to move on the screen (a later location pushed on the driver's stream)",
      ([sel, from]) => {
        const node = document.querySelector(sel);
        if (!node) return false;
        const r = node.getBoundingClientRect();
        return Math.hypot(r.x + r.width / 2 - from.x, r.y + r.height / 2 - from.y) > 3 && Number(node.dataset.updates) >= 2;
      },
      [marker, first],
      45_000,
    );
    const moved = await centre(rider, marker);
    log(`  marker moved from (${first.x.toFixed(0)}, ${first.y.toFixed(0)}) to (${moved.x.toFixed(0)}, ${moved.y.toFixed(0)})`);

    step('chat: the driver greets, the rider writes, the driver replies');
    await waitFor(rider, 'the chat socket to open', () => document.querySelector('#chat [data-testid="chat-state"]').dataset.state === 'open');
    // The simulated driver greets when it confirms; wait for it so that the greeting cannot be
    // taken for the reply.
    await waitFor(rider, "the driver's greeting in the chat", () => document.querySelector('[data-testid="chat-message"][data-from="driver"]'), undefined, 15_000).catch(
      (error) => log(`  (no greeting: ${error.message})`),
    );
    const question = 'Hi! I am at the corner, by the blue door.';
    await sendChat(rider, question);
    const reply = await waitForReply(rider, 'driver', question, "the simulated driver's reply after the rider's message");
    log(`  driver replied: "${reply}"`);
    await rider.waitForTimeout(600); // let the car glide a little for the picture
    await rider.screenshot({ path: join(outDir, 'demo-rider.png') });

    step('the fleet page shows moving drivers and live counters');
    const fleet = (pages.fleet = await openPage(context, '/demo/fleet', errors));
    await waitFor(fleet, 'at least 10 drivers on the fleet map', () => document.querySelectorAll('[data-testid="fleet-driver"]').length >= 10);
    const before = await fleet.evaluate(() =>
      Object.fromEntries([...document.querySelectorAll('[data-testid="fleet-driver"]')].map((n) => [n.dataset.id, `${n.dataset.lat},${n.dataset.lng}`])),
    );
    const movedCount = await waitFor(
      fleet,
      'drivers on the fleet map to move between two snapshots',
      (prev) => {
        const now = [...document.querySelectorAll('[data-testid="fleet-driver"]')];
        const count = now.filter((n) => prev[n.dataset.id] && prev[n.dataset.id] !== `${n.dataset.lat},${n.dataset.lng}`).length;
        return count >= 3 ? count : null;
      },
      before,
      10_000,
    );
    log(`  ${movedCount} drivers moved between snapshots`);
    await waitFor(fleet, 'the events-pushed counter above zero', () => Number(document.querySelector('[data-testid="counter-eventsPushed"]').textContent.replace(/,/g, '')) > 0);
    await waitFor(fleet, 'the assigned ride in the counters', () => Number(document.querySelector('[data-testid="counter-ridesAssigned"]').textContent.replace(/,/g, '')) >= 1);
    await waitFor(
      fleet,
      "the rider's driver coloured as busy (to_pickup or to_dropoff) on the fleet map",
      (id) => ['to_pickup', 'to_dropoff'].includes(document.querySelector(`[data-testid="fleet-driver"][data-id="${id}"]`)?.dataset.state),
      driverId,
      10_000,
    );
    // A few more riders elsewhere, through the public API, so that the fleet has work to show.
    const more = await fleet.evaluate(async () => {
      const city = await (await fetch('/demo/city.json')).json();
      // One rider each: a rider has at most one open ride (v1.1).
      const newRider = async () => (await fetch('/demo/token', { method: 'POST', body: JSON.stringify({ role: 'rider' }) })).json();
      const point = (s, i) => {
        const street = city.streets[s % city.streets.length];
        return street.points[i % street.points.length];
      };
      const trips = [[1, 2, 14, 9], [10, 3, 18, 10], [6, 10, 20, 4]];
      const answers = await Promise.all(trips.map(async ([a, i, b, j]) => fetch('/api/rides', {
        method: 'POST',
        headers: { Authorization: `Bearer ${(await newRider()).token}`, 'Content-Type': 'application/json' },
        body: JSON.stringify({ pickup: point(a, i), dropoff: point(b, j) }),
      })));
      return answers.map((r) => r.status);
    });
    if (more.some((status) => status !== 201)) throw new StepFailure(`expected 201 for three more rides, got ${more.join(', ')}`);
    const busy = await waitFor(
      fleet,
      'more busy drivers on the fleet map',
      () => {
        const n = [...document.querySelectorAll('[data-testid="fleet-driver"]')].filter((d) => d.dataset.state !== 'free' && d.dataset.state !== 'offline').length;
        return n >= 3 ? n : null;
      },
      undefined,
      15_000,
    ).catch((error) => log(`  (fewer than 3 busy drivers: ${error.message})`));
    if (busy) log(`  ${busy} drivers busy`);
    await fleet.waitForTimeout(2000); // a few seconds of the rate sparkline
    await fleet.screenshot({ path: join(outDir, 'demo-fleet.png') });

    step('the rider cancels the ride');
    if ((await rideStatus(rider)) === 'completed') {
      // A short trip may be over already (the driver reported completed): nothing to cancel.
      log('  the ride completed first; nothing to cancel');
    } else {
      await rider.click('[data-testid="cancel-ride"]');
      await waitFor(rider, 'the ride status cancelled', () => document.querySelector('[data-testid="ride-status"]').dataset.status === 'cancelled');
    }
    await rider.click('[data-testid="request-ride"]'); // "New ride"
    await waitFor(rider, 'the rider form to be ready for a new ride', () => document.querySelector('[data-testid="ride-status"]').dataset.status === 'idle');

    step("a human driver goes online on the rider's (new) pickup");
    // A new pickup, away from the first one: the simulated driver of the cancelled ride is still
    // driving there (it is told nothing of the cancel) and must not be the nearest.
    const box = await rider.locator('[data-testid="map"]').boundingBox();
    await rider.click('[data-testid="pick-pickup"]');
    await rider.mouse.click(box.x + box.width * 0.5 + box.height * 0.3, box.y + box.height * 0.8);
    const driver = (pages.driver = await openPage(context, '/demo/driver', errors));
    const human = await driver.textContent('[data-testid="driver-id"]');
    await waitFor(driver, 'the driver socket to open', () => document.querySelector('[data-testid="socket-state"]').dataset.state === 'open');
    // Both pages lay the map out alike (same viewport and panels): the rider's pickup pin is
    // where a click puts the driver's car on the same spot.
    const pickup = await centre(rider, '[data-testid="pickup-marker"] circle');
    await driver.mouse.click(pickup.x, pickup.y);
    await driver.click('[data-testid="go-online"]');
    await waitFor(driver, 'the driver to be online', () => document.querySelector('[data-testid="driver-status"]').dataset.status === 'online');
    const fixes = Number(await driver.textContent('[data-testid="fixes-sent"]'));
    await waitFor(driver, 'two more GPS fixes sent', (n) => Number(document.querySelector('[data-testid="fixes-sent"]').textContent) >= n + 2, fixes, 5000);

    step('the rider requests again; the human driver gets the offer and accepts it');
    await rider.click('[data-testid="request-ride"]');
    await waitFor(driver, 'an offer on the driver page', () => !document.querySelector('[data-testid="offer-card"]').hidden, undefined, 20_000);
    const countdown = await driver.textContent('[data-testid="offer-countdown"]');
    log(`  offer shown, ${countdown} left`);
    await driver.click('[data-testid="offer-accept"]');
    await waitFor(driver, 'offer_result confirmed', () => document.querySelector('[data-testid="offer-result"]').dataset.result === 'confirmed', undefined, 10_000);
    await waitFor(rider, `the rider to see ${human} assigned`, (id) => {
      return document.querySelector('[data-testid="ride-status"]').dataset.status === 'driver_assigned' && document.querySelector('[data-testid="driver-name"]').textContent === id;
    }, human, 10_000);

    step('rider and human driver chat');
    await waitFor(driver, "the driver's chat socket to open", () => document.querySelector('#chat [data-testid="chat-state"]').dataset.state === 'open');
    await waitFor(rider, "the rider's chat socket to open", () => document.querySelector('#chat [data-testid="chat-state"]').dataset.state === 'open');
    const hello = 'Hello driver, I am wearing a red coat.';
    await sendChat(rider, hello);
    await waitFor(driver, "the rider's message on the driver page", (t) => [...document.querySelectorAll('[data-testid="chat-message"][data-from="rider"]')].some((m) => m.firstChild.textContent === t), hello, 10_000);
    const answer = 'Got it, two minutes away.';
    await driver.fill('[data-testid="chat-input"]', answer.slice(0, 6));
    await waitFor(rider, 'the typing indicator on the rider page while the driver types', () => !document.querySelector('[data-testid="chat-typing"]').hidden, undefined, 5000);
    await sendChat(driver, answer);
    await waitForReply(rider, 'driver', hello, "the human driver's answer on the rider page", 10_000);
    await driver.click('[data-testid="auto-drive"]');
    await driver.waitForTimeout(800);
    await driver.screenshot({ path: join(outDir, 'demo-driver.png') });

    if (errors.length > 0) throw new StepFailure(`uncaught errors in the pages:\n  ${errors.join('\n  ')}`);
    step('done');
  } catch (error) {
    for (const [name, page] of Object.entries(pages)) {
      await page.screenshot({ path: join(outDir, `failure-${name}.png`) }).catch(() => {});
      const wire = await page.evaluate(() => [...document.querySelectorAll('#wire-log li')].slice(0, 15).map((li) => li.textContent).join('\n    ')).catch(() => '');
      if (wire) console.error(`  last frames on the ${name} page:\n    ${wire}`);
    }
    if (errors.length > 0) console.error(`  page errors:\n  ${errors.join('\n  ')}`);
    throw error;
  } finally {
    await browser.close();
  }
}

const limit = setTimeout(() => {
  console.error(`FAILED at step "${currentStep}": the whole run took longer than ${OVERALL_LIMIT_MS / 1000} s`);
  process.exit(1);
}, OVERALL_LIMIT_MS);

run().then(
  () => {
    clearTimeout(limit);
    log(`PASSED; screenshots in ${outDir}`);
    process.exit(0);
  },
  (error) => {
    clearTimeout(limit);
    console.error(`FAILED at step "${currentStep}": ${error instanceof StepFailure ? error.message : error.stack ?? error}`);
    process.exit(1);
  },
);
