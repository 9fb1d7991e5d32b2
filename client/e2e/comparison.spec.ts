/**
 * The comparison client in Debian's Chromium against the local cloud, started here as
 * `make run` starts it: sign-in, the three architectures side by side, Stop, resume after
 * a reload, a wrong password.
 */

import { copyFileSync, mkdirSync } from 'node:fs';
import { dirname, resolve } from 'node:path';

import { expect, test as base, type Locator, type Page } from '@playwright/test';

import { LocalCloud, simulated } from './cloud';

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
const METRICS_FILLED = ['setup', 'ttft', 'model-ttft', 'overhead', 'lag', 'completion', 'chars-per-s', 'tokens-per-s', 'total', 'frames', 'chars'];

function panel(page: Page, name: (typeof NAMES)[number]): Locator {
  return page.locator(`section.panel[data-transport="${name}"]`);
}

function metric(p: Locator, name: string): Locator {
  return p.locator(`[data-metric="${name}"] dd`);
}

/** Whitespace-insensitive text, as the Markdown renderer lays it out. */
function squash(text: string): string {
  return text.replace(/\s+/g, ' ').trim();
}

async function signIn(page: Page, cloud: LocalCloud): Promise<void> {
  await page.goto(cloud.ep.client);
  await page.getByLabel('Username').fill(cloud.ep.user.username);
  await page.getByLabel('Password').fill(cloud.ep.user.password);
  await page.getByRole('button', { name: 'Sign in' }).click();
  await expect(page.getByText(`Signed in as ${cloud.ep.user.username}`)).toBeVisible();
}

async function runAll(page: Page, prompt: string): Promise<void> {
  await page.getByLabel('Prompt', { exact: true }).fill(prompt);
  await page.getByRole('button', { name: 'Run all' }).click();
}

/** Waits until every panel shows `status` (a prefix, e.g. "done"). */
async function expectStatus(page: Page, status: RegExp, timeout = 60_000): Promise<void> {
  for (const name of NAMES) {
    await expect(panel(page, name).getByTestId('status')).toHaveText(status, { timeout });
  }
}

test('signs in with the keyboard and signs out', async ({ page, cloud }) => {
  await page.goto(cloud.ep.client);
  await page.getByLabel('Username').focus();
  await page.keyboard.type(cloud.ep.user.username);
  await page.keyboard.press('Tab');
  await page.keyboard.type(cloud.ep.user.password);
  await page.keyboard.press('Enter');
  await expect(page.getByText(`Signed in as ${cloud.ep.user.username}`)).toBeVisible();
  await expect(page.getByText('local simulated model')).toBeVisible();
  await page.getByRole('button', { name: 'Sign out' }).click();
  await expect(page.getByRole('button', { name: 'Sign in' })).toBeVisible();
  // Signed out for good: a reload does not bring the session back.
  await page.reload();
  await expect(page.getByRole('button', { name: 'Sign in' })).toBeVisible();
});

test('tokens are refreshed before they expire, and the refreshed ones work', async ({ page, cloud }) => {
  const refreshes: string[] = [];
  page.on('request', (r) => {
    const target = r.headers()['x-amz-target'] ?? '';
    if (target.endsWith('GetTokensFromRefreshToken')) refreshes.push(target);
  });
  await page.clock.install();
  await signIn(page, cloud);
  expect(refreshes).toEqual([]);
  // 58.5 minutes on the page's clock: the one-hour ID token is two minutes from expiry.
  await page.clock.fastForward('58:30');
  await expect.poll(() => refreshes.length).toBeGreaterThan(0);
  await expect(page.getByText(`Signed in as ${cloud.ep.user.username}`)).toBeVisible();
  await runAll(page, 'After a token refresh [tokens=10]');
  await expectStatus(page, /^done \(end_turn\)$/);
});

test('a wrong password shows the error and stays signed out', async ({ page, cloud }) => {
  await page.goto(cloud.ep.client);
  await page.getByLabel('Username').fill(cloud.ep.user.username);
  await page.getByLabel('Password').fill('not-the-password');
  await page.getByRole('button', { name: 'Sign in' }).click();
  await expect(page.getByRole('alert')).toContainText(/incorrect username or password/i);
  await expect(page.getByText(/Signed in as/)).toHaveCount(0);
});

test('Run all streams the full answer through all three architectures', async ({ page, cloud }, testInfo) => {
  const prompt = 'Compare the three serverless streaming architectures.';
  const expected = squash(simulated(prompt).text);
  await signIn(page, cloud);
  await runAll(page, prompt);
  await expectStatus(page, /^done \(end_turn\)$/);

  for (const name of NAMES) {
    const p = panel(page, name);
    await expect(p.getByTestId('answer')).toHaveText(expected, { useInnerText: false });
    for (const m of METRICS_FILLED) {
      await expect(metric(p, m), `${name} ${m}`).toHaveText(/\d/);
    }
    await expect(metric(p, 'chars')).toHaveText(String(Array.from(simulated(prompt).text).length));
    await expect(metric(p, 'duplicates')).toHaveText('0');
    await expect(p.getByTestId('error')).toHaveCount(0);
  }
  const rows = page.getByTestId('summary').locator('tbody tr');
  await expect(rows).toHaveCount(3);
  for (const name of NAMES) {
    await expect(page.getByTestId('summary').locator(`tr[data-transport="${name}"] td`).first()).toHaveText(
      'done (end_turn)',
    );
  }
  // One line per architecture in the chart's legend, with its figures shown without hovering.
  for (const title of ['Function URL', 'WebSocket', 'AppSync + SQS']) {
    await expect(page.getByTestId('chart-legend').getByText(title, { exact: true })).toBeVisible();
  }
  await expect(page.getByTestId('chart-legend')).toContainText(`${Array.from(simulated(prompt).text).length.toLocaleString('en-US')} chars`);

  const shot = testInfo.outputPath('comparison.png');
  await page.screenshot({ path: shot, fullPage: true });
  const copyTo = process.env.COMPARISON_SCREENSHOT;
  if (copyTo) {
    const target = resolve(copyTo);
    mkdirSync(dirname(target), { recursive: true });
    copyFileSync(shot, target);
  }
});

test('conversation mode sends the history as messages', async ({ page, cloud }) => {
  const bodies: Array<Record<string, unknown>> = [];
  page.on('request', (r) => {
    if (r.method() === 'POST' && r.url() === cloud.ep.functionUrl) bodies.push(r.postDataJSON());
  });
  await signIn(page, cloud);
  await page.getByLabel(/Conversation mode/).check();
  await expect(page.getByText('0 earlier exchanges')).toBeVisible();
  await runAll(page, 'First question [tokens=12]');
  await expectStatus(page, /^done \(end_turn\)$/);
  await expect(page.getByText('1 earlier exchange', { exact: false })).toBeVisible();
  // The second turn carries user, assistant, user: the server accepts it only if the
  // roles alternate and every answer is there.
  const second = 'Second question [tokens=12]';
  await runAll(page, second);
  await expectStatus(page, /^done \(end_turn\)$/);
  await expect(page.getByText('2 earlier exchanges')).toBeVisible();
  const sent = bodies[bodies.length - 1]!;
  expect(sent.prompt).toBeUndefined();
  expect((sent.messages as Array<{ role: string; content: string }>).map((m) => m.role)).toEqual([
    'user',
    'assistant',
    'user',
  ]);
  expect((sent.messages as Array<{ content: string }>)[1]!.content).toBe(simulated('First question [tokens=12]').text);
  for (const name of NAMES) {
    await expect(panel(page, name).getByTestId('answer')).toHaveText(squash(simulated(second).text), {
      useInnerText: false,
    });
  }
  await page.getByRole('button', { name: 'Clear conversation' }).click();
  await expect(page.getByText('0 earlier exchanges')).toBeVisible();
});

test('Stop cancels each running stream on the server', async ({ page, cloud }) => {
  const prompt = 'Write a very long essay [tokens=5000]';
  await signIn(page, cloud);
  await runAll(page, prompt);
  for (const name of NAMES) {
    await expect(metric(panel(page, name), 'chars')).not.toHaveText(/^(–|0)$/);
  }
  for (const name of NAMES) {
    await panel(page, name).getByRole('button', { name: /^Stop / }).click();
  }
  await expectStatus(page, /^cancelled$/, 20_000);
  // The producers stopped reading the model: every model stream was closed early.
  await expect
    .poll(async () => (await cloud.modelStreams(prompt)).map((s) => s.closedBy), { timeout: 10_000 })
    .toEqual(['client', 'client', 'client']);
  for (const s of await cloud.modelStreams(prompt)) expect(s.tokensSent).toBeLessThan(5000);
});

test('a frame the WebSocket gateway could not post is repaired from the store', async ({ page, cloud }) => {
  const prompt = 'Tell me about gap repair.';
  const expected = squash(simulated(prompt).text);
  await signIn(page, cloud);
  await page.getByLabel('Prompt', { exact: true }).fill(prompt);
  // The next posts are refused (429 LimitExceededException), more times than the SDK's and
  // the producer's retries add up to (5 x 5): the start frame is stored but never reaches
  // the socket, so the client sees seq 1 first and fetches seq 0 from the store.
  await cloud.gatewayFaults({ limitExceeded: 25 });
  try {
    const p = panel(page, 'websocket');
    await p.getByRole('button', { name: 'Run WebSocket' }).click();
    await expect(p.getByTestId('status')).toHaveText('done (end_turn)');
    await expect(p.getByTestId('answer')).toHaveText(expected, { useInnerText: false });
    await expect(metric(p, 'gaps')).toHaveText(/^([1-9]\d*) \/ \1 \(\d+ frames?\)$/);
  } finally {
    await cloud.gatewayFaults({ reset: true });
  }
});

test('a reload mid-stream resumes every stream where it was', async ({ page, cloud }) => {
  const prompt = 'Explain resumable streams [tokens=400]';
  const expected = squash(simulated(prompt).text);
  await signIn(page, cloud);
  await runAll(page, prompt);
  for (const name of NAMES) {
    await expect(metric(panel(page, name), 'chars')).not.toHaveText(/^(–|0)$/);
  }
  for (const name of NAMES) {
    await expect(panel(page, name).getByTestId('status')).toHaveText('streaming');
  }
  await page.reload();
  await expect(page.getByText(`Signed in as ${cloud.ep.user.username}`)).toBeVisible();
  await expectStatus(page, /^done \(end_turn\)$/);
  for (const name of NAMES) {
    const p = panel(page, name);
    await expect(p.getByTestId('answer')).toHaveText(expected, { useInnerText: false });
    await expect(metric(p, 'resumes')).toHaveText('1');
    await expect(metric(p, 'ttft')).toHaveText(/\d/);
  }
});

test('a connection the gateway drops mid-stream is resumed and completes', async ({ page, cloud }) => {
  const prompt = 'Survive a dropped connection [tokens=300]';
  const expected = squash(simulated(prompt).text);
  await signIn(page, cloud);
  await page.getByLabel('Prompt', { exact: true }).fill(prompt);
  const p = panel(page, 'websocket');
  await p.getByRole('button', { name: 'Run WebSocket' }).click();
  await expect(metric(p, 'chars')).not.toHaveText(/^(–|0)$/);
  // API Gateway closes connections on its own (idle, 2 h, @connections DELETE).
  expect(await cloud.dropWebSocketConnections()).toBe(1);
  await expect(p.getByTestId('status')).toHaveText('done (end_turn)');
  await expect(p.getByTestId('answer')).toHaveText(expected, { useInnerText: false });
  // Frames that reached the client twice (replay and live, or a store read) are dropped:
  // the text above has each frame exactly once.
  await expect(metric(p, 'resumes')).toHaveText('1');
});

test('the page fits a phone-width screen', async ({ page, cloud }, testInfo) => {
  await page.setViewportSize({ width: 390, height: 844 });
  await signIn(page, cloud);
  await runAll(page, 'Short answer please [tokens=20]');
  await expectStatus(page, /^done \(end_turn\)$/);
  const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  expect(overflow).toBeLessThanOrEqual(0);
  // Panels stack: each starts below the previous one.
  const boxes = await Promise.all(NAMES.map((n) => panel(page, n).boundingBox()));
  expect(boxes[1]!.y).toBeGreaterThan(boxes[0]!.y + boxes[0]!.height - 1);
  expect(boxes[2]!.y).toBeGreaterThan(boxes[1]!.y + boxes[1]!.height - 1);
  await page.screenshot({ path: testInfo.outputPath('phone.png'), fullPage: true });
});
