/**
 * The verdict and session care in Debian's Chromium against a local cloud: "Run N times"
 * with statistics, the distribution chart and export; sign-out cancelling the streams;
 * the running-stream list after TOO_MANY_STREAMS; a restarted local cloud sending the tab
 * back to sign-in; the form surviving a reload; the input limit; axe-core's WCAG rules.
 */

import { copyFileSync, mkdirSync, readFileSync } from 'node:fs';
import { resolve } from 'node:path';

import AxeBuilder from '@axe-core/playwright';
import { expect, test as base, type Locator, type Page } from '@playwright/test';

import { freePortBase, LocalCloud } from './cloud';

const test = base.extend<object, { cloud: LocalCloud }>({
  cloud: [
    // eslint-disable-next-line no-empty-pattern
    async ({}, use) => {
      const cloud = await LocalCloud.start();
      await use(cloud);
      await cloud.stop();
    },
    { scope: 'worker', timeout: 120_000 },
  ],
});

const NAMES = ['functionUrl', 'websocket', 'appsync'] as const;
type Name = (typeof NAMES)[number];
const ROTATION: Name[][] = [
  ['functionUrl', 'websocket', 'appsync'],
  ['websocket', 'appsync', 'functionUrl'],
  ['appsync', 'functionUrl', 'websocket'],
];

function panel(page: Page, name: Name): Locator {
  return page.locator(`section.panel[data-transport="${name}"]`);
}

async function signIn(page: Page, cloud: LocalCloud): Promise<void> {
  await page.goto(cloud.ep.client);
  await page.getByLabel('Username').fill(cloud.ep.user.username);
  await page.getByLabel('Password').fill(cloud.ep.user.password);
  await page.getByRole('button', { name: 'Sign in' }).click();
  await expect(page.getByText(`Signed in as ${cloud.ep.user.username}`)).toBeVisible();
}

async function expectStatus(page: Page, status: RegExp, timeout = 60_000): Promise<void> {
  for (const name of NAMES) {
    await expect(panel(page, name).getByTestId('status')).toHaveText(status, { timeout });
  }
}

async function expectNoAxeViolations(page: Page, where: string): Promise<void> {
  const result = await new AxeBuilder({ page }).withTags(['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa']).analyze();
  const summary = result.violations.map((v) => `${v.id} (${v.impact}): ${v.nodes.length} nodes`);
  expect(summary, `axe violations ${where}`).toEqual([]);
}

/** Runs "Run N times" and waits for it to finish. */
async function runRounds(page: Page, prompt: string, rounds: number, timeout = 180_000): Promise<void> {
  await page.getByLabel('Prompt', { exact: true }).fill(prompt);
  await page.getByLabel('Runs', { exact: true }).fill(String(rounds));
  await page.getByRole('button', { name: `Run ${rounds} times` }).click();
  await expect(page.getByTestId('batch-progress')).toBeVisible();
  await expect(page.getByTestId('batch-progress')).toHaveCount(0, { timeout });
}

function countCell(page: Page, metric: string, name: Name): Locator {
  return page.locator(`[data-testid="stats"] tbody[data-metric="${metric}"] tr[data-transport="${name}"] td[data-stat="count"]`);
}

test('Run N times: statistics, distribution chart, the documented order, export', async ({ page, cloud }) => {
  await page.goto(cloud.ep.client);
  await expect(page.getByRole('button', { name: 'Sign in' })).toBeVisible();
  await expectNoAxeViolations(page, 'on the sign-in page');
  await signIn(page, cloud);
  await expectNoAxeViolations(page, 'after sign-in');
  await runRounds(page, 'Statistics please [tokens=8]', 3);

  for (const name of NAMES) {
    await expect(countCell(page, 'totalMs', name)).toHaveText('3');
    await expect(countCell(page, 'ttftMs', name)).toHaveText('3');
    await expect(
      page.locator(`[data-testid="stats"] tbody[data-metric="ttftMs"] tr[data-transport="${name}"] td[data-stat="median"]`),
    ).toHaveText(/\d+ ms|\d\.\d\d s/);
  }
  // Exactly one best per metric, the others with their difference.
  await expect(page.locator('[data-testid="stats"] tbody[data-metric="totalMs"] tr.best')).toHaveCount(1);
  await expect(page.locator('[data-testid="stats"] tbody[data-metric="totalMs"] td[data-stat="diff"]', { hasText: /^\+/ })).toHaveCount(2);
  // The distribution chart: a plot and a legend with every architecture's median.
  await expect(page.getByTestId('distribution-plot').locator('canvas')).toHaveCount(1);
  await expect(page.getByTestId('distribution').getByText(/median .* \(3 runs\)/)).toHaveCount(3);
  await expect(page.getByRole('heading', { name: 'All runs: 9 kept, 9 completed' })).toBeVisible();

  // Export: the runs, in the documented rotating order.
  const [json] = await Promise.all([page.waitForEvent('download'), page.getByRole('button', { name: 'Export JSON' }).click()]);
  expect(json.suggestedFilename()).toBe('llm-stream-runs.json');
  const exported = JSON.parse(readFileSync((await json.path())!, 'utf8')) as {
    runs: Array<{ transport: Name; round: number; position: number; status: string; totalMs: number; batchId: string }>;
  };
  expect(exported.runs).toHaveLength(9);
  expect(exported.runs.map((r) => r.transport)).toEqual(ROTATION.flat());
  expect(exported.runs.map((r) => [r.round, r.position])).toEqual(ROTATION.flatMap((_, r) => [0, 1, 2].map((p) => [r, p])));
  expect(new Set(exported.runs.map((r) => r.batchId)).size).toBe(1);
  for (const r of exported.runs) {
    expect(r.status).toBe('done');
    expect(r.totalMs).toBeGreaterThan(0);
  }
  const [csv] = await Promise.all([page.waitForEvent('download'), page.getByRole('button', { name: 'Export CSV' }).click()]);
  const lines = readFileSync((await csv.path())!, 'utf8').trim().split('\r\n');
  expect(lines).toHaveLength(10);
  expect(lines[0]).toMatch(/^startedAt,streamId,transport,batchId,round,position,status/);

  // Kept across a reload; gone after Clear runs.
  await page.reload();
  await expect(page.getByRole('heading', { name: 'All runs: 9 kept, 9 completed' })).toBeVisible();
  await expect(countCell(page, 'totalMs', 'appsync')).toHaveText('3');
  await page.getByRole('button', { name: 'Clear runs' }).click();
  await expect(page.getByRole('heading', { name: 'All runs: 0 kept, 0 completed' })).toBeVisible();
  await expect(countCell(page, 'totalMs', 'appsync')).toHaveText('0');
});

test('after Run all the page passes axe-core, and the chart shows values without hovering', async ({ page, cloud }) => {
  const missing: string[] = [];
  page.on('response', (r) => {
    if (r.status() === 404 && r.url().startsWith(cloud.ep.client)) missing.push(r.url());
  });
  await signIn(page, cloud);
  await expect(page.locator('link[rel="icon"]')).toHaveAttribute('href', './favicon.svg');
  expect((await page.request.get(new URL('favicon.svg', cloud.ep.client).toString())).status()).toBe(200);
  await page.getByLabel('Prompt', { exact: true }).fill('Accessible answers please [tokens=30]');
  await page.getByRole('button', { name: 'Run all' }).click();
  await expectStatus(page, /^done \(end_turn\)$/);
  await expect(page.getByTestId('chart-legend').locator('li')).toHaveCount(3);
  await expect(page.getByTestId('chart-legend')).toContainText(/Function URL \d+ chars, first at [\d.]+ m?s, ended at [\d.]+ m?s/);
  // The answer panes scroll: each is reachable with the keyboard.
  for (const name of NAMES) {
    await expect(panel(page, name).getByRole('region', { name: /answer$/ })).toHaveAttribute('tabindex', '0');
  }
  await expectNoAxeViolations(page, 'after Run all');
  // The summary table fits: its last column is inside the viewport at 1280 px.
  await page.setViewportSize({ width: 1280, height: 900 });
  const wrap = await page.getByTestId('summary').evaluate((t) => {
    const w = t.parentElement!;
    return { scroll: w.scrollWidth, client: w.clientWidth, page: document.documentElement.scrollWidth - innerWidth };
  });
  expect(wrap.page).toBeLessThanOrEqual(0);
  expect(wrap.scroll).toBeLessThanOrEqual(wrap.client);
  expect(missing, 'nothing the page asked its host for is missing (favicon included)').toEqual([]);
});

test('sign-out cancels the running streams first', async ({ page, cloud }) => {
  const prompt = 'A very long essay before signing out [tokens=5000]';
  await signIn(page, cloud);
  await page.getByLabel('Prompt', { exact: true }).fill(prompt);
  await page.getByRole('button', { name: 'Run all' }).click();
  for (const name of NAMES) {
    await expect(panel(page, name).locator('[data-metric="chars"] dd')).not.toHaveText(/^(–|0)$/);
  }
  await page.getByRole('button', { name: 'Sign out' }).click();
  await expect(page.getByRole('button', { name: 'Sign in' })).toBeVisible({ timeout: 20_000 });
  // Every model stream was closed by its producer, not left to run to the end.
  const streams = await cloud.modelStreams(prompt);
  expect(streams.map((s) => s.closedBy)).toEqual(['client', 'client', 'client']);
  for (const s of streams) expect(s.tokensSent).toBeLessThan(5000);
});

test('TOO_MANY_STREAMS lists the running streams with a one-click cancel', async ({ page, context, cloud }) => {
  await signIn(page, cloud);
  await page.getByLabel('Prompt', { exact: true }).fill('Hold every slot [tokens=5000]');
  await page.getByRole('button', { name: 'Run all' }).click();
  await expectStatus(page, /^streaming$/);
  // A second tab of the same user: a fourth stream is refused.
  const other = await context.newPage();
  await other.goto(cloud.ep.client);
  await expect(other.getByText(`Signed in as ${cloud.ep.user.username}`)).toBeVisible();
  await other.getByLabel('Prompt', { exact: true }).fill('One more [tokens=5]');
  await other.getByRole('button', { name: 'Run WebSocket' }).click();
  await expect(panel(other, 'websocket').getByTestId('error')).toContainText('TOO_MANY_STREAMS');
  const list = other.getByTestId('running-streams');
  await expect(list.locator('li')).toHaveCount(3);
  await list.getByRole('button', { name: 'Cancel all' }).click();
  await expect(list.getByText('None are running now')).toBeVisible({ timeout: 20_000 });
  await expectStatus(page, /^cancelled$/, 20_000);
  await other.close();
});

test('the prompt and options survive a reload; the counter blocks an over-long send', async ({ page, cloud }) => {
  const starts: string[] = [];
  page.on('request', (r) => {
    if (r.method() === 'POST' && r.url() === cloud.ep.functionUrl) starts.push(r.url());
  });
  await signIn(page, cloud);
  await page.getByLabel('Prompt', { exact: true }).fill('Keep me across reloads');
  await page.getByLabel('System prompt').fill('Be terse');
  await page.getByLabel('Max tokens').fill('77');
  await page.getByLabel(/Conversation mode/).check();
  await page.reload();
  await expect(page.getByLabel('Prompt', { exact: true })).toHaveValue('Keep me across reloads');
  await expect(page.getByLabel('System prompt')).toHaveValue('Be terse');
  await expect(page.getByLabel('Max tokens')).toHaveValue('77');
  await expect(page.getByLabel(/Conversation mode/)).toBeChecked();
  await page.getByLabel(/Conversation mode/).uncheck();
  await page.getByLabel('System prompt').fill('');

  await page.getByLabel('Prompt', { exact: true }).fill('x'.repeat(32_001));
  await expect(page.getByTestId('char-counter')).toContainText('32,001 / 32,000 characters');
  await page.getByRole('button', { name: 'Run all' }).click();
  await expect(page.getByRole('alert')).toContainText('The input is 32,001 characters (prompt); the limit is 32,000.');
  for (const name of NAMES) await expect(panel(page, name).getByTestId('status')).toHaveText('idle');
  expect(starts).toEqual([]);
  // Exactly at the limit it is sent.
  await page.getByLabel('Prompt', { exact: true }).fill('x'.repeat(32_000));
  await page.getByLabel('Max tokens').fill('3');
  await page.getByRole('button', { name: 'Run Function URL' }).click();
  await expect(panel(page, 'functionUrl').getByTestId('status')).toHaveText(/^done/);
  expect(starts).toHaveLength(1);
});

test('conversation mode shows the whole transcript', async ({ page, cloud }) => {
  await signIn(page, cloud);
  await page.getByLabel(/Conversation mode/).check();
  await page.getByLabel('Prompt', { exact: true }).fill('First turn [tokens=6]');
  await page.getByRole('button', { name: 'Run all' }).click();
  await expectStatus(page, /^done \(end_turn\)$/);
  await page.getByLabel('Prompt', { exact: true }).fill('Second turn [tokens=6]');
  await page.getByRole('button', { name: 'Run all' }).click();
  await expectStatus(page, /^done \(end_turn\)$/);
  for (const name of NAMES) {
    const turns = panel(page, name).getByTestId('turn');
    // You, Model, You: then the current answer below.
    await expect(turns).toHaveCount(3);
    await expect(turns.nth(0)).toContainText('First turn [tokens=6]');
    await expect(turns.nth(2)).toContainText('Second turn [tokens=6]');
  }
  await page.getByRole('button', { name: 'Clear conversation' }).click();
});

test('a restart of the local cloud sends the open tab back to sign-in, whichever architecture notices', async ({ page }) => {
  test.setTimeout(360_000);
  let cloud = await LocalCloud.start(await freePortBase());
  const signInTo = async (c: LocalCloud) => {
    await page.getByLabel('Username').fill(c.ep.user.username);
    await page.getByLabel('Password').fill(c.ep.user.password);
    await page.getByRole('button', { name: 'Sign in' }).click();
    await expect(page.getByText(`Signed in as ${c.ep.user.username}`)).toBeVisible();
  };
  try {
    await page.goto(cloud.ep.client);
    await signInTo(cloud);
    // Each refuses the old token its own way: Function URL 401 "unknown signing key",
    // WebSocket handshake refused (close 1006), AppSync connection_error Unauthorized.
    for (const [name, title] of [
      ['functionUrl', 'Function URL'],
      ['websocket', 'WebSocket'],
      ['appsync', 'AppSync + SQS'],
    ] as const) {
      cloud = await cloud.restart();
      await page.getByLabel('Prompt', { exact: true }).fill(`After the restart, ${name} [tokens=5]`);
      await page.getByRole('button', { name: `Run ${title}` }).click();
      await expect(page.getByTestId('session-notice'), name).toHaveText(/The local cloud was restarted/, {
        timeout: 30_000,
      });
      await expect(page.getByRole('button', { name: 'Sign in' })).toBeVisible();
      // The new cloud's user signs in (the page read the new settings) and streams.
      await signInTo(cloud);
      await page.getByRole('button', { name: `Run ${title}` }).click();
      await expect(panel(page, name).getByTestId('status')).toHaveText(/^done \(end_turn\)$/);
    }
  } finally {
    await cloud.stop();
  }
});

for (const colorScheme of ['light', 'dark'] as const) {
  test(`a finished 10-run comparison (${colorScheme})`, async ({ browser, cloud }, testInfo) => {
    test.setTimeout(420_000);
    const context = await browser.newContext({ colorScheme, viewport: { width: 1440, height: 1000 } });
    const page = await context.newPage();
    try {
      await signIn(page, cloud);
      await runRounds(page, 'Compare the architectures [tokens=60]', 10, 400_000);
      for (const name of NAMES) await expect(countCell(page, 'totalMs', name)).toHaveText('10');
      await expectNoAxeViolations(page, `after 10 runs (${colorScheme})`);
      const shot = testInfo.outputPath(`comparison-10-runs-${colorScheme}.png`);
      await page.screenshot({ path: shot, fullPage: true });
      const dir = process.env.VERDICT_SCREENSHOTS;
      if (dir) {
        mkdirSync(resolve(dir), { recursive: true });
        copyFileSync(shot, resolve(dir, `comparison-10-runs-${colorScheme}.png`));
      }
    } finally {
      await context.close();
    }
  });
}
