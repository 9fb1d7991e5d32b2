/**
 * The local cloud as `make run` starts it (`python -m local`), one per test worker, and
 * the simulated model's answers computed by the same Python code the emulator uses.
 */

import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { createServer } from 'node:net';
import { createInterface } from 'node:readline';

export const ROOT = resolve(import.meta.dirname, '..', '..');
const PYTHON = process.env.LLM_STREAM_PYTHON ?? join(ROOT, '.venv', 'bin', 'python');
const START_TIMEOUT_MS = 90_000;
const STOP_TIMEOUT_MS = 30_000;
const STAGE = 'api'; // the WebSocket API's stage, as the local gateway serves it

export interface Endpoints {
  client: string;
  rest: string;
  bedrock: string;
  websocket: string;
  functionUrl: string;
  user: { username: string; password: string };
}

export class LocalCloud {
  private constructor(
    private readonly proc: ChildProcess,
    private readonly dir: string,
    readonly ep: Endpoints,
    readonly output: string[],
    private readonly portBase: number,
  ) {}

  /** A cloud on free ports (`portBase` 0), or on `portBase`, +1, ... (see `freePortBase`). */
  static async start(portBase = 0): Promise<LocalCloud> {
    const dir = mkdtempSync(join(tmpdir(), 'llm-stream-e2e-'));
    const file = join(dir, 'endpoints.json');
    const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('AWS_')));
    const proc = spawn(PYTHON, ['-m', 'local', '--port-base', String(portBase), '--endpoints-file', file], {
      cwd: ROOT,
      env,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    const output: string[] = [];
    createInterface({ input: proc.stderr! }).on('line', (l) => output.push(l));
    const lines = createInterface({ input: proc.stdout! });
    await new Promise<void>((ready, fail) => {
      const timer = setTimeout(() => {
        proc.kill('SIGKILL');
        fail(new Error(`no READY from the local cloud within ${START_TIMEOUT_MS} ms:\n${output.join('\n')}`));
      }, START_TIMEOUT_MS);
      lines.on('line', (line) => {
        output.push(line);
        if (line === 'READY') {
          clearTimeout(timer);
          ready();
        }
      });
      proc.on('exit', (code) => {
        clearTimeout(timer);
        fail(new Error(`the local cloud exited (${code}) before READY:\n${output.join('\n')}`));
      });
    });
    const ep = JSON.parse(readFileSync(file, 'utf8')) as Endpoints;
    return new LocalCloud(proc, dir, ep, output, portBase);
  }

  /**
   * Stops this cloud and starts a fresh one on the same ports, as `make run` after Ctrl+C
   * would: new user pool keys, a new password, empty tables. Needs a fixed port base.
   */
  async restart(): Promise<LocalCloud> {
    if (this.portBase === 0) throw new Error('restart() needs a cloud started on a fixed port base');
    await this.stop();
    // A port of the old cloud may take a moment to be released (its child processes).
    for (let attempt = 1; ; attempt++) {
      try {
        return await LocalCloud.start(this.portBase);
      } catch (err) {
        if (attempt >= 10 || !/is in use/.test(String(err))) throw err;
        await new Promise((r) => setTimeout(r, 1000));
      }
    }
  }

  async stop(): Promise<void> {
    if (this.proc.exitCode === null) {
      const exited = new Promise<void>((done) => this.proc.once('exit', () => done()));
      this.proc.kill('SIGINT');
      const timeout = new Promise<'timeout'>((done) => setTimeout(() => done('timeout'), STOP_TIMEOUT_MS));
      if ((await Promise.race([exited, timeout])) === 'timeout') this.proc.kill('SIGKILL');
    }
    rmSync(this.dir, { recursive: true, force: true });
  }

  /** Sets the WebSocket gateway's faults (e.g. `{ limitExceeded: 5 }`, `{ reset: true }`). */
  async gatewayFaults(faults: Record<string, unknown>): Promise<void> {
    const url = new URL('_gateway/faults', this.ep.websocket.replace(/^ws/, 'http'));
    const resp = await fetch(url, { method: 'POST', body: JSON.stringify(faults) });
    if (!resp.ok) throw new Error(`POST ${url}: ${resp.status} ${await resp.text()}`);
  }

  /** Closes every open WebSocket connection from the server side (`@connections` DELETE). */
  async dropWebSocketConnections(): Promise<number> {
    const base = this.ep.websocket.replace(/^ws/, 'http');
    const resp = await fetch(new URL('_gateway/connections', base));
    const { connections } = (await resp.json()) as { connections: Array<{ connectionId: string }> };
    for (const { connectionId } of connections) {
      const url = new URL(`${STAGE}/@connections/${encodeURIComponent(connectionId)}`, base);
      const del = await fetch(url, { method: 'DELETE' });
      if (del.status !== 204) throw new Error(`DELETE ${url}: ${del.status}`);
    }
    return connections.length;
  }

  /** The Bedrock emulator's log of model streams for `prompt`. */
  async modelStreams(prompt: string): Promise<Array<{ closedBy: string | null; tokensSent: number }>> {
    const hash = simulated(prompt).promptHash;
    const resp = await fetch(new URL('_emulator/streams', this.ep.bedrock));
    const body = (await resp.json()) as { streams: Array<{ promptHash: string; closedBy: string | null; tokensSent: number }> };
    return body.streams.filter((s) => s.promptHash === hash);
  }
}

function portFree(port: number): Promise<boolean> {
  return new Promise((done) => {
    const server = createServer();
    server.once('error', () => done(false));
    server.listen(port, '127.0.0.1', () => server.close(() => done(true)));
  });
}

/** A base port with the local cloud's nine consecutive ports free (it can restart on them). */
export async function freePortBase(): Promise<number> {
  for (let attempt = 0; attempt < 50; attempt++) {
    // Below Linux's ephemeral range (32768+), where the OS picks other clouds' free ports.
    const base = 12_000 + Math.floor(Math.random() * 20_000);
    let free = true;
    for (let p = base; p < base + 10 && free; p++) free = await portFree(p);
    if (free) return base;
  }
  throw new Error('no nine consecutive free ports found');
}

/** The simulated model's exact answer to a one-prompt request, and its prompt hash. */
export function simulated(prompt: string): { text: string; promptHash: string } {
  const code = [
    'import json, sys',
    'from local.simulated_model import answer_text, prompt_hash, request_for_prompt',
    'r = request_for_prompt(sys.argv[1])',
    'print(json.dumps({"text": answer_text(r), "promptHash": prompt_hash(r)}))',
  ].join('\n');
  const out = spawnSync(PYTHON, ['-c', code, prompt], { cwd: ROOT, encoding: 'utf8' });
  if (out.status !== 0) throw new Error(`simulated model: ${out.stderr}`);
  return JSON.parse(out.stdout) as { text: string; promptHash: string };
}
