/**
 * Python helpers from the repository (the Bedrock emulator, moto, chalicelib),
 * run as child processes of the test. They need the project's virtualenv
 * (`make install` at the repository root creates ../.venv); PYTHON overrides it.
 */

import { execFile, spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';

export const REPO_ROOT = fileURLToPath(new URL('../../', import.meta.url));
export const PYTHON = process.env.PYTHON ?? `${REPO_ROOT}.venv/bin/python`;

function checkPython() {
  if (!existsSync(PYTHON)) {
    throw new Error(`${PYTHON} not found: run \`make install\` at the repository root (or set PYTHON)`);
  }
}

/**
 * Start a long-running Python process whose first stdout line is JSON; resolves
 * with that object and a stop() that ends the process (by its pid).
 * @param {string[]} args
 */
export async function startPython(args, { timeoutMs = 30_000 } = {}) {
  checkPython();
  const child = spawn(PYTHON, args, { cwd: REPO_ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
  let stderr = '';
  child.stderr.on('data', (d) => {
    stderr = (stderr + d).slice(-4000);
  });
  const lines = createInterface({ input: child.stdout });
  const first = await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no output from python ${args.join(' ')}: ${stderr}`)), timeoutMs);
    lines.once('line', (line) => {
      clearTimeout(timer);
      resolve(line);
    });
    child.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`python ${args.join(' ')} exited with ${code}: ${stderr}`));
    });
  });
  const exited = new Promise((resolve) => child.once('exit', resolve));
  return {
    info: JSON.parse(/** @type {string} */ (first)),
    async stop() {
      lines.close();
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
      await exited;
    },
  };
}

/**
 * Run a Python snippet with JSON in (argv[1]) and JSON out (stdout).
 * @param {string} code @param {unknown} input @param {Record<string, string>} [env]
 */
export function runPython(code, input, env = {}) {
  checkPython();
  return new Promise((resolve, reject) => {
    execFile(
      PYTHON,
      ['-c', code, JSON.stringify(input)],
      { cwd: REPO_ROOT, env: { ...process.env, ...env }, timeout: 60_000 },
      (err, stdout, stderr) => {
        if (err) reject(new Error(`${err.message}\n${stderr}`));
        else resolve(JSON.parse(stdout));
      },
    );
  });
}

const MOTO = `
import json, logging, threading
from moto.server import ThreadedMotoServer
logging.getLogger("werkzeug").setLevel(logging.ERROR)
server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
server.start()
print(json.dumps({"port": server.get_host_and_port()[1]}), flush=True)
threading.Event().wait()
`;

/** moto's server (DynamoDB's API, as the local cloud runs it) on a free port. */
export async function startMoto() {
  const moto = await startPython(['-c', MOTO]);
  return { endpoint: `http://127.0.0.1:${moto.info.port}`, stop: moto.stop };
}

/** The local Bedrock emulator (local/bedrock.py) on a free port; ``endpoint`` ends with '/'. */
export async function startBedrockEmulator({ firstTokenDelayMs = 20, tokensPerSecond = 400 } = {}) {
  const emulator = await startPython([
    '-m',
    'local.bedrock',
    '--port',
    '0',
    '--first-token-delay-ms',
    String(firstTokenDelayMs),
    '--tokens-per-second',
    String(tokensPerSecond),
  ]);
  return { endpoint: /** @type {string} */ (emulator.info.bedrock), stop: emulator.stop };
}
