// Thin wrappers over iproute2 (`ip`, `tc`) for the namespace harness: every command is run
// without a shell, and a failure carries the command and its stderr.
import { execFile } from 'node:child_process';
import { readFile, readlink } from 'node:fs/promises';
import { promisify } from 'node:util';

const run = promisify(execFile);

/** Runs `cmd args…`; resolves to stdout, rejects with the command line and its stderr. */
export async function sh(cmd: string, args: readonly string[]): Promise<string> {
  try {
    const { stdout } = await run(cmd, args, { encoding: 'utf8', timeout: 20_000 });
    return stdout;
  } catch (err) {
    const e = err as { stderr?: string; message: string };
    throw new Error(`${cmd} ${args.join(' ')}: ${(e.stderr ?? '').trim() || e.message}`);
  }
}

export const ip = (...args: string[]): Promise<string> => sh('ip', args);
/** `ip -n NS …` (a command inside a namespace). */
export const ipIn = (ns: string, ...args: string[]): Promise<string> => sh('ip', ['-n', ns, ...args]);
/** `ip netns exec NS tc …`. */
export const tcIn = (ns: string, ...args: string[]): Promise<string> => sh('ip', ['netns', 'exec', ns, 'tc', ...args]);

/** Names of the network namespaces that `ip netns` knows. */
export async function listNamespaces(): Promise<string[]> {
  const out = await ip('netns', 'list');
  return out.split('\n').map((l) => l.trim().split(/\s+/)[0] ?? '').filter((n) => n !== '');
}

/** Pids of the processes inside a namespace. */
export async function namespacePids(ns: string): Promise<number[]> {
  const out = await ip('netns', 'pids', ns);
  return out.split('\n').map((l) => Number(l.trim())).filter((p) => Number.isSafeInteger(p) && p > 1);
}

/** Whether a pid names a live process (not a zombie). */
export async function pidAlive(pid: number): Promise<boolean> {
  if (!Number.isSafeInteger(pid) || pid <= 1) return false;
  try {
    const stat = await readFile(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) !== 'Z';
  } catch {
    return false;
  }
}

/** The network namespace inode a process lives in (`net:[4026532…]`), or undefined once it is gone. */
export async function netnsOf(pid: number): Promise<string | undefined> {
  try {
    return await readlink(`/proc/${pid}/ns/net`);
  } catch {
    return undefined;
  }
}

/** Whether this process may create network namespaces (root with CAP_SYS_ADMIN, iproute2 present). */
export async function canCreateNamespaces(probeName: string): Promise<{ ok: true } | { ok: false; reason: string }> {
  if (process.platform !== 'linux') return { ok: false, reason: `network namespaces need Linux (this is ${process.platform})` };
  if (process.getuid?.() !== 0) return { ok: false, reason: 'network namespaces need root (run the tests as root, as CI does)' };
  try {
    await ip('netns', 'add', probeName);
    await ip('netns', 'delete', probeName);
    return { ok: true };
  } catch (err) {
    return { ok: false, reason: `cannot create a network namespace: ${(err as Error).message}` };
  }
}
