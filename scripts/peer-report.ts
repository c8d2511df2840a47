// Pure parts of the `peer` benchmark (scripts/bench-peer.ts): reading scripts/torch_bench.py's
// JSON lines, and turning paired rounds of Flock and PyTorch figures into medians, ratios and
// tables (plain text for the terminal, Markdown for the README).

/** One line of scripts/torch_bench.py's output. */
export interface TorchResult {
  readonly model: string;
  /** Trainable parameters of PyTorch's model, to check it is the one Flock trains. */
  readonly parameters: number;
  readonly threads: number;
  readonly batch: number;
  readonly steps: number;
  readonly imagesPerSec: number;
  /** Per second of the process's CPU time (all its threads); absent if the script could not tell. */
  readonly imagesPerCpuSec: number | undefined;
  readonly torchVersion: string;
}

function positive(value: unknown): value is number {
  return typeof value === 'number' && Number.isFinite(value) && value > 0;
}

/** Parses every non-empty line of the script's stdout; throws, naming the line, on anything else. */
export function parseTorchOutput(stdout: string): TorchResult[] {
  const results: TorchResult[] = [];
  for (const [n, raw] of stdout.split('\n').entries()) {
    const line = raw.trim();
    if (line === '') continue;
    let value: unknown;
    try {
      value = JSON.parse(line);
    } catch {
      throw new Error(`torch_bench.py output line ${n + 1} is not JSON: ${line.slice(0, 200)}`);
    }
    const v = (typeof value === 'object' && value !== null ? value : {}) as Record<string, unknown>;
    if (typeof v.error === 'string') throw new Error(`torch_bench.py: ${v.error}`);
    if (typeof v.model !== 'string' || !positive(v.parameters) || !positive(v.threads) || !positive(v.batch) || !positive(v.steps) || !positive(v.images_per_sec)) {
      throw new Error(`torch_bench.py output line ${n + 1} lacks model, parameters, threads, batch, steps or images_per_sec: ${line.slice(0, 200)}`);
    }
    results.push({
      model: v.model,
      parameters: v.parameters,
      threads: v.threads,
      batch: v.batch,
      steps: v.steps,
      imagesPerSec: v.images_per_sec,
      imagesPerCpuSec: positive(v.images_per_cpu_sec) ? v.images_per_cpu_sec : undefined,
      torchVersion: typeof v.torch === 'string' ? v.torch : 'unknown',
    });
  }
  return results;
}

export function median(values: readonly number[]): number {
  if (values.length === 0) throw new RangeError('median of no values');
  const sorted = [...values].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  return sorted.length % 2 === 1 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
}

/** Flock's and PyTorch's images/s in one round, measured back to back. */
export interface RoundPair {
  readonly flock: number;
  readonly torch: number;
}

/** One side-by-side comparison, e.g. `net` in one Flock process against PyTorch with 1 thread. */
export interface Comparison {
  readonly model: string;
  readonly flockSetup: string;
  readonly torchSetup: string;
  readonly rounds: readonly RoundPair[];
}

export interface ComparisonSummary {
  readonly flock: number;
  readonly torch: number;
  /** Median of the per-round ratios: each round's pair shared the machine's conditions. */
  readonly ratio: number;
  readonly ratios: number[];
}

export function summarize(c: Comparison): ComparisonSummary {
  const ratios = c.rounds.map((r) => r.flock / r.torch);
  return { flock: median(c.rounds.map((r) => r.flock)), torch: median(c.rounds.map((r) => r.torch)), ratio: median(ratios), ratios };
}

const thousands = (v: number): string => Math.round(v).toLocaleString('en-US');
const times = (v: number): string => `${v.toFixed(2)}×`;

export const PEER_HEADER = ['model', 'Flock', 'img/s', 'PyTorch', 'img/s', 'Flock/PyTorch', 'per round'] as const;

/** Table rows: medians of each side, the median ratio and every round's ratio. */
export function peerRows(comparisons: readonly Comparison[]): string[][] {
  return comparisons.map((c) => {
    const s = summarize(c);
    return [c.model, c.flockSetup, thousands(s.flock), c.torchSetup, thousands(s.torch), times(s.ratio), s.ratios.map((r) => r.toFixed(2)).join(' ')];
  });
}

/** The same table in Markdown, model names as code, ratios in bold: what the README carries. */
export function peerMarkdown(comparisons: readonly Comparison[]): string {
  const rows = peerRows(comparisons).map(([model, ...rest]) => {
    const cells = [`\`${model ?? ''}\``, ...rest];
    cells[5] = `**${cells[5] ?? ''}**`;
    return `| ${cells.join(' | ')} |`;
  });
  return [`| ${PEER_HEADER.join(' | ')} |`, `| ${PEER_HEADER.map(() => '---').join(' | ')} |`, ...rows].join('\n');
}

/** The machine as the README names it: "AMD EPYC, 2 cores". */
export function machineName(cpuinfo: string, fallbackModel: string, cores: number): string {
  const model = /^model name\s*:\s*(.+)$/m.exec(cpuinfo)?.[1]?.trim() || fallbackModel.trim() || 'unknown CPU';
  return `${model}, ${cores} core${cores === 1 ? '' : 's'}`;
}
