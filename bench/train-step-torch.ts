import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as readline from 'node:readline';

const PY = '/usr/bin/python3'; // Debian's Python, where python3-torch lives (the pyenv python3 on PATH has no torch)

export interface TorchServer {
  /** Absent when torch is unavailable (then `skipped` says why). */
  run?: (batch: number, steps: number) => Promise<number>;
  version?: string;
  blas?: string;
  skipped?: string;
  close(): void;
}

/** Starts bench/train_step_torch.py as a timing server, so its rounds interleave with ours. */
export async function startTorch(threads: number): Promise<TorchServer> {
  const script = path.resolve(__dirname, __filename.endsWith('.ts') ? '.' : '../../bench', 'train_step_torch.py');
  const aptHint = fs.existsSync('/tmp/apt.log') ? ' (apt may still be installing python3-torch: see /tmp/apt.log)' : ' (apt-get install python3-torch)';
  if (!fs.existsSync(PY)) return { skipped: `${PY} not found${aptHint}`, close: () => {} };
  const t = String(threads);
  const env = { ...process.env, OMP_NUM_THREADS: t, OPENBLAS_NUM_THREADS: t, MKL_NUM_THREADS: t };
  const child = spawn(PY, [script, '--threads', t], { env, stdio: ['pipe', 'pipe', 'pipe'] });
  let stderr = '';
  child.stderr.on('data', (d) => (stderr += d));
  const lines = readline.createInterface({ input: child.stdout })[Symbol.asyncIterator]();
  const next = async (): Promise<Record<string, unknown>> => {
    const line = await lines.next();
    if (line.done) throw new Error(`torch script ended: ${stderr.trim().split('\n').pop() ?? ''}`);
    return JSON.parse(line.value);
  };
  const close = () => {
    child.stdin.end();
    child.kill();
  };
  let hello: Record<string, unknown>;
  try {
    hello = await next();
  } catch (e) {
    close();
    return { skipped: `torch script failed: ${(e as Error).message}`, close: () => {} };
  }
  if (hello.skipped) {
    close();
    return { skipped: `${hello.skipped}${aptHint}`, close: () => {} };
  }
  const run = async (batch: number, steps: number) => {
    child.stdin.write(`${batch} ${steps}\n`);
    return (await next()).ms as number;
  };
  return { run, version: hello.version as string, blas: hello.blas as string, close };
}
