// MaxPoolGrad for the webgpu backend. tfjs-backend-webgpu's own kernel sends the gradient
// of a window with several equal maxima to the wrong one (not the first); ties are common
// here because tanh saturates to exactly ±1. Like PyTorch and Flock's wasm kernel, the
// gradient goes to the *first* maximum of each window (row-major). One invocation per input
// element sums dy over the output windows that chose it; no positions tensor is needed.
import type * as tfjs from '@tensorflow/tfjs';
import type { Tf } from '../../backend.js';
import type { KernelArgs, KernelConfig, TensorInfo } from '../kernels/util.js';

/** The parts of tfjs-backend-webgpu's WebGPUBackend and program interface used here. */
interface WebgpuBackendLike {
  runWebGPUProgram(program: object, inputs: TensorInfo[], outputDtype: tfjs.DataType, uniforms: { type: 'int32'; data: number[] }[]): TensorInfo;
}

const WORKGROUP = 64;

class FirstMaxPoolGradProgram {
  readonly variableNames = ['dy', 'x'];
  readonly uniforms = 'strides : vec2<i32>, pads : vec2<i32>, filterDims : vec2<i32>, outDims : vec2<i32>, inDims : vec2<i32>';
  readonly workgroupSize: [number, number, number] = [WORKGROUP, 1, 1];
  readonly size = true;
  readonly shaderKey = 'flockFirstMaxPoolGrad';
  readonly dispatchLayout: { x: number[] };
  readonly dispatch: [number, number, number];

  constructor(readonly outputShape: number[]) {
    const total = outputShape.reduce((a, b) => a * b, 1);
    this.dispatchLayout = { x: outputShape.map((_, i) => i) };
    this.dispatch = [Math.ceil(total / WORKGROUP), 1, 1];
  }

  getUserCode(): string {
    return `
      fn main(index : i32) {
        if (index >= uniforms.size) { return; }
        let coords = getCoordsFromIndex(index);
        let b = coords[0];
        let xr = coords[1];
        let xc = coords[2];
        let d = coords[3];
        let s = uniforms.strides;
        let p = uniforms.pads;
        let f = uniforms.filterDims;
        // Output windows whose span [y*s - p, y*s - p + f - 1] covers (xr, xc).
        let nr = xr + p.x - f.x + 1;
        let nc = xc + p.y - f.y + 1;
        let rLo = select(0, (nr + s.x - 1) / s.x, nr > 0);
        let cLo = select(0, (nc + s.y - 1) / s.y, nc > 0);
        let rHi = min(uniforms.outDims.x - 1, (xr + p.x) / s.x);
        let cHi = min(uniforms.outDims.y - 1, (xc + p.y) / s.y);
        var sum = 0.0;
        for (var yr = rLo; yr <= rHi; yr++) {
          for (var yc = cLo; yc <= cHi; yc++) {
            let r0 = yr * s.x - p.x;
            let c0 = yc * s.y - p.y;
            var found = false;
            var best = 0.0;
            var bestR = -1;
            var bestC = -1;
            for (var wr = 0; wr < f.x; wr++) {
              let r = r0 + wr;
              if (r < 0 || r >= uniforms.inDims.x) { continue; }
              for (var wc = 0; wc < f.y; wc++) {
                let c = c0 + wc;
                if (c < 0 || c >= uniforms.inDims.y) { continue; }
                let v = getX(b, r, c, d);
                if (!found || v > best) {
                  found = true;
                  best = v;
                  bestR = r;
                  bestC = c;
                }
              }
            }
            if (bestR == xr && bestC == xc) { sum += getDy(b, yr, yc, d); }
          }
        }
        setOutputAtIndex(index, sum);
      }
    `;
  }
}

export function webgpuMaxPoolGradKernel(tf: Tf): KernelConfig {
  return {
    kernelName: tf.MaxPoolGrad,
    backendName: 'webgpu',
    kernelFunc: ({ inputs, backend, attrs }: KernelArgs): TensorInfo => {
      const { dy, input } = inputs as { dy: TensorInfo; input: TensorInfo };
      const { filterSize, strides, pad, dimRoundingMode } = attrs as unknown as tfjs.MaxPoolGradAttrs;
      const info = tf.backend_util.computePool2DInfo(input.shape as [number, number, number, number], filterSize, strides, 1, pad, dimRoundingMode);
      const program = new FirstMaxPoolGradProgram(info.inShape);
      return (backend as unknown as WebgpuBackendLike).runWebGPUProgram(program, [dy, input], 'float32', [
        { type: 'int32', data: [info.strideHeight, info.strideWidth] },
        { type: 'int32', data: [info.padInfo.top, info.padInfo.left] },
        { type: 'int32', data: [info.filterHeight, info.filterWidth] },
        { type: 'int32', data: [info.outHeight, info.outWidth] },
        { type: 'int32', data: [info.inHeight, info.inWidth] },
      ]);
    },
  };
}
