// Tanh: tfjs-backend-wasm's kernel calls libm's scalar tanh (about 10 ns per element, the
// slowest kernel of a training step). This one evaluates tanh in double precision from a
// table and the addition theorem, tanh(a + r) = (tanh a + tanh r) / (1 + tanh a · tanh r),
// with a = x truncated to a multiple of 1/16 and a short odd series for tanh r (|r| < 1/16,
// truncation error < 1e-13). Rounded to float32 it equals Math.tanh (what the cpu backend
// and PyTorch's libm compute), including saturation to exactly ±1 from |x| ≈ 8.7 on. It
// has no data-dependent branches, which matters: random signs defeat branch prediction.
import type { Tf } from '../../backend.js';
import { floatMemory, type KernelArgs, type KernelBackendName, type KernelConfig, type TensorInfo } from './util.js';

const STEPS = 16; // table points per unit
const LIMIT = 9.5; // tanh(9.5) rounds to 1 in float32
const HALF = LIMIT * STEPS;
const STEP = 1 / STEPS;

export function tanhKernel(tf: Tf, backendName: KernelBackendName): KernelConfig {
  // table[j + HALF] = tanh(j / STEPS) for |j| <= HALF
  const table = new Float64Array(2 * HALF + 1);
  for (let j = -HALF; j <= HALF; j++) table[j + HALF] = Math.tanh(j / STEPS);
  const kernelFunc = ({ inputs, backend }: KernelArgs): TensorInfo => {
    const { x } = inputs as unknown as { x: TensorInfo };
    if (x.dtype !== 'float32') throw new Error('Tanh: float32 tensors only');
    const mem = floatMemory(backendName, backend);
    const out = mem.alloc([...x.shape]);
    const src = mem.view(x);
    const dst = mem.view(out);
    const n = src.length;
    for (let i = 0; i < n; i++) {
      const v = Math.max(-LIMIT, Math.min(LIMIT, src[i]!)); // NaN stays NaN
      const j = (v * STEPS) | 0; // truncates toward zero, so r has v's sign
      const r = v - j * STEP; // exact: STEP is a power of two
      const r2 = r * r;
      const tr = r + r * r2 * (-1 / 3 + r2 * (2 / 15 + r2 * (-17 / 315 + r2 * (62 / 2835))));
      const ta = table[j + HALF]!;
      dst[i] = (ta + tr) / (1 + ta * tr);
    }
    return out;
  };
  return { kernelName: tf.Tanh, backendName, kernelFunc };
}
