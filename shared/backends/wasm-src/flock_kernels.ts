// Flock's WebAssembly SIMD kernels (AssemblyScript, built by `npm run build` into
// dist/shared/backends/kernels/flock_kernels.wasm). The module imports tfjs-backend-wasm's
// own WebAssembly.Memory, so every pointer here is a tensor's offset in that heap: kernels
// read and write tensors in place. It has no data segments and allocates nothing (it must
// never write outside the buffers it is given), and no function here traps on any input.

// ---- Tanh ------------------------------------------------------------------------------
// tanh(a + r) = (tanh a + tanh r) / (1 + tanh a · tanh r) in double precision, with
// a = x truncated to a multiple of 1/64 (tanh a from a table the caller fills with
// Math.tanh(j / 64), j = -608..608, f64) and the odd series for tanh r up to r⁷, |r| < 1/64
// (truncation error < 1e-17). Rounded to float32 this is Math.tanh rounded to float32
// (both are within ~1e-16 of tanh, far below float32's 6e-8 spacing), ±1 from |x| ≈ 8.7
// on (clamped at 9.5); NaN stays NaN, and the sign of x is OR-ed into the result, so
// tanh(−0) = −0 as in Math.tanh.

const STEPS: f64 = 64;
const STEP: f64 = 1.0 / 64;
const LIMIT: f64 = 9.5;
const HALF: i32 = 608; // LIMIT * STEPS

@inline function tanhPair(v0: v128, table: usize): v128 {
  // pmin/pmax (a single minpd/maxpd on x64, unlike min/max): with x first, NaN stays NaN
  const v = f64x2.pmin(f64x2.pmax(v0, f64x2.splat(-LIMIT)), f64x2.splat(LIMIT));
  const jf = f64x2.trunc(f64x2.mul(v, f64x2.splat(STEPS)));
  const r = f64x2.sub(v, f64x2.mul(jf, f64x2.splat(STEP)));
  const r2 = f64x2.mul(r, r);
  let p = f64x2.add(f64x2.splat(2.0 / 15), f64x2.mul(r2, f64x2.splat(-17.0 / 315)));
  p = f64x2.add(f64x2.splat(-1.0 / 3), f64x2.mul(r2, p)); // next term 62/2835·r⁹ < 2e-18
  const tr = f64x2.add(r, f64x2.mul(f64x2.mul(r, r2), p));
  // jf + 1.5·2^52 holds the integer jf in its low 32 bits (NaN: 0, any entry: r is NaN anyway)
  const j = f64x2.add(jf, f64x2.splat(6755399441055744.0));
  const j0 = i32x4.extract_lane(j, 0) + HALF;
  const j1 = i32x4.extract_lane(j, 2) + HALF;
  const ta = f64x2.replace_lane(f64x2.splat(load<f64>(table + (<usize>j0 << 3))), 1, load<f64>(table + (<usize>j1 << 3)));
  return f64x2.div(f64x2.add(ta, tr), f64x2.add(f64x2.splat(1), f64x2.mul(ta, tr)));
}

@inline function tanhScalar(x: f32, table: usize): f32 {
  const v = f64x2.promote_low_f32x4(f32x4.splat(x));
  const out = f32x4.demote_f64x2_zero(tanhPair(v, table));
  return f32x4.extract_lane(v128.or(out, v128.and(f32x4.splat(x), i32x4.splat(0x80000000))), 0);
}

export function tanh(src: usize, dst: usize, n: i32, table: usize): void {
  let i = 0;
  for (; i + 4 <= n; i += 4) {
    const v = v128.load(src + (<usize>i << 2));
    const lo = tanhPair(f64x2.promote_low_f32x4(v), table);
    const hi = tanhPair(f64x2.promote_low_f32x4(v128.shuffle<f32>(v, v, 2, 3, 0, 1)), table);
    const out = v128.shuffle<f32>(f32x4.demote_f64x2_zero(lo), f32x4.demote_f64x2_zero(hi), 0, 1, 4, 5);
    v128.store(dst + (<usize>i << 2), v128.or(out, v128.and(v, i32x4.splat(0x80000000)))); // tanh(−0) = −0
  }
  for (; i < n; i++) store<f32>(dst + (<usize>i << 2), tanhScalar(load<f32>(src + (<usize>i << 2)), table));
}

/** tanh(x + bias) over n pixels of c channels: the float32 sum, then tanh as above. */
export function biasTanh(src: usize, bias: usize, dst: usize, n: i32, c: i32, table: usize): void {
  let p: usize = 0;
  for (let i = 0; i < n; i++) {
    let k = 0;
    for (; k + 4 <= c; k += 4) {
      const v = f32x4.add(v128.load(src + p), v128.load(bias + (<usize>k << 2)));
      const lo = tanhPair(f64x2.promote_low_f32x4(v), table);
      const hi = tanhPair(f64x2.promote_low_f32x4(v128.shuffle<f32>(v, v, 2, 3, 0, 1)), table);
      const out = v128.shuffle<f32>(f32x4.demote_f64x2_zero(lo), f32x4.demote_f64x2_zero(hi), 0, 1, 4, 5);
      v128.store(dst + p, v128.or(out, v128.and(v, i32x4.splat(0x80000000))));
      p += 16;
    }
    for (; k < c; k++) {
      store<f32>(dst + p, tanhScalar(load<f32>(src + p) + load<f32>(bias + (<usize>k << 2)), table));
      p += 4;
    }
  }
}

// ---- Tanh gradient -----------------------------------------------------------------------
// dx = (1 − y·y) · dy in float32, the operations and rounding of tfjs's own Tanh gradient
// (square, sub, mul: three kernels and two temporaries there, one pass here).

export function tanhGrad(y: usize, dy: usize, dx: usize, n: i32): void {
  const one = f32x4.splat(1);
  let i = 0;
  for (; i + 4 <= n; i += 4) {
    const o = <usize>i << 2;
    const yv = v128.load(y + o);
    v128.store(dx + o, f32x4.mul(f32x4.sub(one, f32x4.mul(yv, yv)), v128.load(dy + o)));
  }
  for (; i < n; i++) {
    const o = <usize>i << 2;
    const yv = load<f32>(y + o);
    store<f32>(dx + o, (1 - yv * yv) * load<f32>(dy + o));
  }
}

// ---- MaxPoolGrad, 2x2 windows, stride 2, no padding ------------------------------------------
// Each window's gradient goes to its FIRST maximum in the order (0,0), (0,1), (1,0), (1,1);
// a NaN counts as a maximum (the last NaN wins, as in PyTorch). Every cell of a window is
// written (zero except at the maximum); cells no window covers (odd sizes) are zeroed too.

@inline function isNan(v: v128): v128 { return f32x4.ne(v, v); }

export function maxPoolGrad2x2(x: usize, dy: usize, dx: usize, batch: i32, inH: i32, inW: i32, c: i32, outH: i32, outW: i32): void {
  if (inH != 2 * outH || inW != 2 * outW) memory.fill(dx, 0, <usize>batch * inH * inW * c * 4);
  const rowStride = <usize>inW * c * 4;
  const cb = <usize>c * 4;
  let g = dy;
  for (let b = 0; b < batch; b++) {
    for (let oy = 0; oy < outH; oy++) {
      for (let ox = 0; ox < outW; ox++) {
        const p00 = ((<usize>b * inH + 2 * oy) * inW + 2 * ox) * cb;
        let k = 0;
        for (; k + 4 <= c; k += 4) {
          const o = <usize>k << 2;
          const a = p00 + o;
          const bb = a + cb;
          const cc = a + rowStride;
          const dd = cc + cb;
          const va = v128.load(x + a);
          const vb = v128.load(x + bb);
          const vc = v128.load(x + cc);
          const vd = v128.load(x + dd);
          const sb = v128.or(f32x4.gt(vb, va), isNan(vb));
          let m = v128.bitselect(vb, va, sb);
          const sc = v128.or(f32x4.gt(vc, m), isNan(vc));
          m = v128.bitselect(vc, m, sc);
          const sd = v128.or(f32x4.gt(vd, m), isNan(vd));
          const gv = v128.load(g + o);
          const later = v128.or(sc, sd);
          v128.store(dx + a, v128.andnot(gv, v128.or(sb, later)));
          v128.store(dx + bb, v128.andnot(v128.and(gv, sb), later));
          v128.store(dx + cc, v128.andnot(v128.and(gv, sc), sd));
          v128.store(dx + dd, v128.and(gv, sd));
        }
        for (; k < c; k++) {
          const o = <usize>k << 2;
          const a = p00 + o;
          const bb = a + cb;
          const cc = a + rowStride;
          const dd = cc + cb;
          const va = load<f32>(x + a);
          const vb = load<f32>(x + bb);
          const vc = load<f32>(x + cc);
          const vd = load<f32>(x + dd);
          let w = 0;
          let m = va;
          if (vb > m || vb != vb) { w = 1; m = vb; }
          if (vc > m || vc != vc) { w = 2; m = vc; }
          if (vd > m || vd != vd) w = 3;
          const gv = load<f32>(g + o);
          store<f32>(dx + a, w == 0 ? gv : 0);
          store<f32>(dx + bb, w == 1 ? gv : 0);
          store<f32>(dx + cc, w == 2 ? gv : 0);
          store<f32>(dx + dd, w == 3 ? gv : 0);
        }
        g += cb;
      }
    }
  }
}

// ---- Conv2DBackpropFilter, stride 1, dilation 1, NHWC, out channels a multiple of 8 -----------
// dW[i, j, c, o] = Σ over (b, oy, ox) of x[b, oy + i − padTop, ox + j − padLeft, c] · dy[b, oy, ox, o],
// directly, without an unfolded (im2col) copy of the input. For each output row (b, oy) and
// filter tap (i, j), a block of up to 4 input channels × 8 output channels (the last 3
// channels as one block of 3, e.g. an RGB input) is accumulated
// in registers along the row (the input and dy rows stay in L1 cache), then added into dW:
// a sum per row, then over rows (float32, a fixed order: deterministic).

@inline function block4(xp: usize, dyp: usize, wp: usize, count: i32, xStride: usize, dyStride: usize, wRow: usize): void {
  let a0 = f32x4.splat(0); let a1 = f32x4.splat(0); let b0 = f32x4.splat(0); let b1 = f32x4.splat(0);
  let c0 = f32x4.splat(0); let c1 = f32x4.splat(0); let d0 = f32x4.splat(0); let d1 = f32x4.splat(0);
  for (let n = 0; n < count; n++) {
    const g0 = v128.load(dyp);
    const g1 = v128.load(dyp, 16);
    let s = v128.load32_splat(xp);
    a0 = f32x4.add(a0, f32x4.mul(s, g0)); a1 = f32x4.add(a1, f32x4.mul(s, g1));
    s = v128.load32_splat(xp, 4);
    b0 = f32x4.add(b0, f32x4.mul(s, g0)); b1 = f32x4.add(b1, f32x4.mul(s, g1));
    s = v128.load32_splat(xp, 8);
    c0 = f32x4.add(c0, f32x4.mul(s, g0)); c1 = f32x4.add(c1, f32x4.mul(s, g1));
    s = v128.load32_splat(xp, 12);
    d0 = f32x4.add(d0, f32x4.mul(s, g0)); d1 = f32x4.add(d1, f32x4.mul(s, g1));
    xp += xStride;
    dyp += dyStride;
  }
  v128.store(wp, f32x4.add(v128.load(wp), a0)); v128.store(wp, f32x4.add(v128.load(wp, 16), a1), 16);
  wp += wRow;
  v128.store(wp, f32x4.add(v128.load(wp), b0)); v128.store(wp, f32x4.add(v128.load(wp, 16), b1), 16);
  wp += wRow;
  v128.store(wp, f32x4.add(v128.load(wp), c0)); v128.store(wp, f32x4.add(v128.load(wp, 16), c1), 16);
  wp += wRow;
  v128.store(wp, f32x4.add(v128.load(wp), d0)); v128.store(wp, f32x4.add(v128.load(wp, 16), d1), 16);
}

@inline function block3(xp: usize, dyp: usize, wp: usize, count: i32, xStride: usize, dyStride: usize, wRow: usize): void {
  let a0 = f32x4.splat(0); let a1 = f32x4.splat(0); let b0 = f32x4.splat(0); let b1 = f32x4.splat(0);
  let c0 = f32x4.splat(0); let c1 = f32x4.splat(0);
  for (let n = 0; n < count; n++) {
    const g0 = v128.load(dyp);
    const g1 = v128.load(dyp, 16);
    let s = v128.load32_splat(xp);
    a0 = f32x4.add(a0, f32x4.mul(s, g0)); a1 = f32x4.add(a1, f32x4.mul(s, g1));
    s = v128.load32_splat(xp, 4);
    b0 = f32x4.add(b0, f32x4.mul(s, g0)); b1 = f32x4.add(b1, f32x4.mul(s, g1));
    s = v128.load32_splat(xp, 8);
    c0 = f32x4.add(c0, f32x4.mul(s, g0)); c1 = f32x4.add(c1, f32x4.mul(s, g1));
    xp += xStride;
    dyp += dyStride;
  }
  v128.store(wp, f32x4.add(v128.load(wp), a0)); v128.store(wp, f32x4.add(v128.load(wp, 16), a1), 16);
  wp += wRow;
  v128.store(wp, f32x4.add(v128.load(wp), b0)); v128.store(wp, f32x4.add(v128.load(wp, 16), b1), 16);
  wp += wRow;
  v128.store(wp, f32x4.add(v128.load(wp), c0)); v128.store(wp, f32x4.add(v128.load(wp, 16), c1), 16);
}

@inline function block2(xp: usize, dyp: usize, wp: usize, count: i32, xStride: usize, dyStride: usize, wRow: usize): void {
  let a0 = f32x4.splat(0); let a1 = f32x4.splat(0); let b0 = f32x4.splat(0); let b1 = f32x4.splat(0);
  for (let n = 0; n < count; n++) {
    const g0 = v128.load(dyp);
    const g1 = v128.load(dyp, 16);
    let s = v128.load32_splat(xp);
    a0 = f32x4.add(a0, f32x4.mul(s, g0)); a1 = f32x4.add(a1, f32x4.mul(s, g1));
    s = v128.load32_splat(xp, 4);
    b0 = f32x4.add(b0, f32x4.mul(s, g0)); b1 = f32x4.add(b1, f32x4.mul(s, g1));
    xp += xStride;
    dyp += dyStride;
  }
  v128.store(wp, f32x4.add(v128.load(wp), a0)); v128.store(wp, f32x4.add(v128.load(wp, 16), a1), 16);
  wp += wRow;
  v128.store(wp, f32x4.add(v128.load(wp), b0)); v128.store(wp, f32x4.add(v128.load(wp, 16), b1), 16);
}

@inline function block1(xp: usize, dyp: usize, wp: usize, count: i32, xStride: usize, dyStride: usize): void {
  let a0 = f32x4.splat(0); let a1 = f32x4.splat(0);
  for (let n = 0; n < count; n++) {
    const s = v128.load32_splat(xp);
    a0 = f32x4.add(a0, f32x4.mul(s, v128.load(dyp))); a1 = f32x4.add(a1, f32x4.mul(s, v128.load(dyp, 16)));
    xp += xStride;
    dyp += dyStride;
  }
  v128.store(wp, f32x4.add(v128.load(wp), a0)); v128.store(wp, f32x4.add(v128.load(wp, 16), a1), 16);
}

export function conv2dFilterGrad(x: usize, dy: usize, dw: usize, batch: i32, inH: i32, inW: i32, c: i32,
  outH: i32, outW: i32, o: i32, kh: i32, kw: i32, padTop: i32, padLeft: i32): void {
  memory.fill(dw, 0, <usize>kh * kw * c * o * 4);
  const xStride = <usize>c * 4;
  const dyStride = <usize>o * 4;
  for (let b = 0; b < batch; b++) {
    for (let oy = 0; oy < outH; oy++) {
      const dyRow = dy + (<usize>b * outH + oy) * outW * dyStride;
      for (let i = 0; i < kh; i++) {
        const iy = oy + i - padTop;
        if (iy < 0 || iy >= inH) continue;
        const xRow = x + (<usize>b * inH + iy) * inW * xStride;
        for (let j = 0; j < kw; j++) {
          const ox0 = max(0, padLeft - j);
          const ox1 = min(outW, inW + padLeft - j);
          if (ox0 >= ox1) continue;
          const count = ox1 - ox0;
          const xp = xRow + <usize>(ox0 + j - padLeft) * xStride;
          const dyp = dyRow + <usize>ox0 * dyStride;
          const tap = dw + <usize>(i * kw + j) * c * dyStride;
          for (let o0 = 0; o0 < o; o0 += 8) {
            let k = 0;
            for (; k + 4 <= c; k += 4) block4(xp + (<usize>k << 2), dyp + (<usize>o0 << 2), tap + <usize>k * dyStride + (<usize>o0 << 2), count, xStride, dyStride, dyStride);
            if (k + 3 == c) { block3(xp + (<usize>k << 2), dyp + (<usize>o0 << 2), tap + <usize>k * dyStride + (<usize>o0 << 2), count, xStride, dyStride, dyStride); k += 3; }
            for (; k + 2 <= c; k += 2) block2(xp + (<usize>k << 2), dyp + (<usize>o0 << 2), tap + <usize>k * dyStride + (<usize>o0 << 2), count, xStride, dyStride, dyStride);
            for (; k < c; k++) block1(xp + (<usize>k << 2), dyp + (<usize>o0 << 2), tap + <usize>k * dyStride + (<usize>o0 << 2), count, xStride, dyStride);
          }
        }
      }
    }
  }
}

// ---- Batch norm in training mode, over the channels of NHWC --------------------------------
// Per-channel sums are taken in float32 along one image row (w pixels) and added up over
// rows in float64: a fixed order, so deterministic, and more accurate than one float32 sum
// over N·H·W elements. `scratch` holds 8·c floats (8-byte aligned): two float32 row sums,
// two float64 totals, two float32 per-channel results.

@inline function zero32(p: usize, c: i32): void { memory.fill(p, 0, <usize>c << 2); }

/** Adds the float32 row sums at p32 into the float64 totals at p64 and clears the row sums. */
@inline function fold(p32: usize, p64: usize, c: i32): void {
  for (let k = 0; k < c; k++) {
    store<f64>(p64 + (<usize>k << 3), load<f64>(p64 + (<usize>k << 3)) + <f64>load<f32>(p32 + (<usize>k << 2)));
  }
  zero32(p32, c);
}

/**
 * mean[c] = Σx / M and variance[c] = Σ(x − mean)² / M (biased), M = rows·w, where x is the
 * input plus, when `bias` is not 0, a per-channel bias (a convolution's, added in float32).
 */
export function batchNormStats(x: usize, bias: usize, rows: i32, w: i32, c: i32, mean: usize, variance: usize, scratch: usize): void {
  const hasBias = bias != 0;
  const rowSum = scratch;
  const total = scratch + (<usize>c << 3);
  zero32(rowSum, c);
  memory.fill(total, 0, <usize>c << 3);
  const m = <f64>rows * <f64>w;
  let p = x;
  for (let r = 0; r < rows; r++) {
    for (let px = 0; px < w; px++) {
      let k = 0;
      for (; k + 4 <= c; k += 4) {
        const a = rowSum + (<usize>k << 2);
        const xv = hasBias ? f32x4.add(v128.load(p), v128.load(bias + (<usize>k << 2))) : v128.load(p);
        v128.store(a, f32x4.add(v128.load(a), xv));
        p += 16;
      }
      for (; k < c; k++) {
        const a = rowSum + (<usize>k << 2);
        const xv = hasBias ? load<f32>(p) + load<f32>(bias + (<usize>k << 2)) : load<f32>(p);
        store<f32>(a, load<f32>(a) + xv);
        p += 4;
      }
    }
    fold(rowSum, total, c);
  }
  for (let k = 0; k < c; k++) {
    store<f32>(mean + (<usize>k << 2), <f32>(load<f64>(total + (<usize>k << 3)) / m));
    store<f64>(total + (<usize>k << 3), 0);
  }
  p = x;
  for (let r = 0; r < rows; r++) {
    for (let px = 0; px < w; px++) {
      let k = 0;
      for (; k + 4 <= c; k += 4) {
        const a = rowSum + (<usize>k << 2);
        const xv = hasBias ? f32x4.add(v128.load(p), v128.load(bias + (<usize>k << 2))) : v128.load(p);
        const d = f32x4.sub(xv, v128.load(mean + (<usize>k << 2)));
        v128.store(a, f32x4.add(v128.load(a), f32x4.mul(d, d)));
        p += 16;
      }
      for (; k < c; k++) {
        const a = rowSum + (<usize>k << 2);
        const xv = hasBias ? load<f32>(p) + load<f32>(bias + (<usize>k << 2)) : load<f32>(p);
        const d = xv - load<f32>(mean + (<usize>k << 2));
        store<f32>(a, load<f32>(a) + d * d);
        p += 4;
      }
    }
    fold(rowSum, total, c);
  }
  for (let k = 0; k < c; k++) store<f32>(variance + (<usize>k << 2), <f32>(load<f64>(total + (<usize>k << 3)) / m));
}

/**
 * x̂ = (x − mean)·rstd, y = x̂·γ + β, scale = γ·rstd with rstd = 1/sqrt(variance + eps), all
 * in float32 (scale is what the gradient needs). n pixels of c channels.
 */
export function batchNormApply(x: usize, bias: usize, n: i32, c: i32, mean: usize, variance: usize, gamma: usize, beta: usize, eps: f32,
  y: usize, xhat: usize, scale: usize, scratch: usize): void {
  const hasBias = bias != 0;
  const rstd = scratch;
  for (let k = 0; k < c; k++) {
    const o = <usize>k << 2;
    const rs: f32 = 1 / sqrt<f32>(load<f32>(variance + o) + eps);
    store<f32>(rstd + o, rs);
    store<f32>(scale + o, load<f32>(gamma + o) * rs);
  }
  let p: usize = 0;
  for (let i = 0; i < n; i++) {
    let k = 0;
    for (; k + 4 <= c; k += 4) {
      const o = <usize>k << 2;
      const xv = hasBias ? f32x4.add(v128.load(x + p), v128.load(bias + o)) : v128.load(x + p);
      const h = f32x4.mul(f32x4.sub(xv, v128.load(mean + o)), v128.load(rstd + o));
      v128.store(xhat + p, h);
      v128.store(y + p, f32x4.add(f32x4.mul(h, v128.load(gamma + o)), v128.load(beta + o)));
      p += 16;
    }
    for (; k < c; k++) {
      const o = <usize>k << 2;
      const xv = hasBias ? load<f32>(x + p) + load<f32>(bias + o) : load<f32>(x + p);
      const h = (xv - load<f32>(mean + o)) * load<f32>(rstd + o);
      store<f32>(xhat + p, h);
      store<f32>(y + p, h * load<f32>(gamma + o) + load<f32>(beta + o));
      p += 4;
    }
  }
}

/**
 * dx = (dy − x̂·mean(dy·x̂) − mean(dy))·scale, dγ = Σ dy·x̂, dβ = Σ dy (the closed form of
 * shared/models/forward.ts), over rows of w pixels of c channels; and dbias = Σ dx, the
 * gradient of a bias added before the batch norm (`batchNormStats`' bias). scratch: 12·c floats.
 */
export function batchNormGrad(dy: usize, xhat: usize, scale: usize, rows: i32, w: i32, c: i32,
  dx: usize, dgamma: usize, dbeta: usize, dbias: usize, scratch: usize): void {
  const rowC = scratch + <usize>c * 40;
  const totC = scratch + (<usize>c << 5);
  zero32(rowC, c);
  memory.fill(totC, 0, <usize>c << 3);
  const rowA = scratch;
  const rowB = scratch + (<usize>c << 2);
  const totA = scratch + (<usize>c << 3);
  const totB = scratch + (<usize>c << 4);
  const meanA = scratch + <usize>c * 24;
  const meanB = scratch + <usize>c * 28;
  zero32(rowA, c);
  zero32(rowB, c);
  memory.fill(totA, 0, <usize>c << 4);
  const m = <f64>rows * <f64>w;
  let p: usize = 0;
  for (let r = 0; r < rows; r++) {
    for (let px = 0; px < w; px++) {
      let k = 0;
      for (; k + 4 <= c; k += 4) {
        const o = <usize>k << 2;
        const g = v128.load(dy + p);
        v128.store(rowA + o, f32x4.add(v128.load(rowA + o), g));
        v128.store(rowB + o, f32x4.add(v128.load(rowB + o), f32x4.mul(g, v128.load(xhat + p))));
        p += 16;
      }
      for (; k < c; k++) {
        const o = <usize>k << 2;
        const g = load<f32>(dy + p);
        store<f32>(rowA + o, load<f32>(rowA + o) + g);
        store<f32>(rowB + o, load<f32>(rowB + o) + g * load<f32>(xhat + p));
        p += 4;
      }
    }
    fold(rowA, totA, c);
    fold(rowB, totB, c);
  }
  for (let k = 0; k < c; k++) {
    const sa = load<f64>(totA + (<usize>k << 3));
    const sb = load<f64>(totB + (<usize>k << 3));
    store<f32>(dbeta + (<usize>k << 2), <f32>sa);
    store<f32>(dgamma + (<usize>k << 2), <f32>sb);
    store<f32>(meanA + (<usize>k << 2), <f32>(sa / m));
    store<f32>(meanB + (<usize>k << 2), <f32>(sb / m));
  }
  p = 0;
  for (let r = 0; r < rows; r++) {
    for (let px = 0; px < w; px++) {
      let k = 0;
      for (; k + 4 <= c; k += 4) {
        const o = <usize>k << 2;
        const t = f32x4.sub(f32x4.sub(v128.load(dy + p), f32x4.mul(v128.load(xhat + p), v128.load(meanB + o))), v128.load(meanA + o));
        const d = f32x4.mul(t, v128.load(scale + o));
        v128.store(dx + p, d);
        v128.store(rowC + o, f32x4.add(v128.load(rowC + o), d));
        p += 16;
      }
      for (; k < c; k++) {
        const o = <usize>k << 2;
        const t = load<f32>(dy + p) - load<f32>(xhat + p) * load<f32>(meanB + o) - load<f32>(meanA + o);
        const d = t * load<f32>(scale + o);
        store<f32>(dx + p, d);
        store<f32>(rowC + o, load<f32>(rowC + o) + d);
        p += 4;
      }
    }
    fold(rowC, totC, c);
  }
  for (let k = 0; k < c; k++) store<f32>(dbias + (<usize>k << 2), <f32>load<f64>(totC + (<usize>k << 3)));
}

// ---- tanh then 2x2 max pool, backward ---------------------------------------------------------
// Given y = tanh(·) and the pooled gradient dp: dx = (1 − y²) · (dp routed to each window's
// first maximum of y, as maxPoolGrad2x2), every cell computed as FlockTanhGrad would from
// MaxPoolGrad's output, so bit-identical to the two kernels; plus dbias[c] = Σ dx over
// (b, y, x) (float32 along a pooled row, float64 over rows), for the bias before the tanh.
// Needs whole windows (2·outH ≤ inH, 2·outW ≤ inW); uncovered cells (odd sizes) get 0.
// scratch: 6·c floats, 8-byte aligned.

@inline function tanhGradCell(g: v128, sel: v128, yv: v128): v128 {
  return f32x4.mul(f32x4.sub(f32x4.splat(1), f32x4.mul(yv, yv)), v128.and(g, sel));
}

export function tanhMaxPoolGrad(y: usize, dp: usize, dx: usize, batch: i32, inH: i32, inW: i32, c: i32, outH: i32, outW: i32,
  dbias: usize, scratch: usize): void {
  if (inH != 2 * outH || inW != 2 * outW) memory.fill(dx, 0, <usize>batch * inH * inW * c * 4);
  const rowSum = scratch;
  const total = scratch + (<usize>c << 3);
  zero32(rowSum, c);
  memory.fill(total, 0, <usize>c << 3);
  const rowStride = <usize>inW * c * 4;
  const cb = <usize>c * 4;
  const all = i32x4.splat(-1);
  let g = dp;
  for (let b = 0; b < batch; b++) {
    for (let oy = 0; oy < outH; oy++) {
      for (let ox = 0; ox < outW; ox++) {
        const p00 = ((<usize>b * inH + 2 * oy) * inW + 2 * ox) * cb;
        let k = 0;
        for (; k + 4 <= c; k += 4) {
          const o = <usize>k << 2;
          const a = p00 + o;
          const bb = a + cb;
          const cc = a + rowStride;
          const dd = cc + cb;
          const va = v128.load(y + a);
          const vb = v128.load(y + bb);
          const vc = v128.load(y + cc);
          const vd = v128.load(y + dd);
          const sb = v128.or(f32x4.gt(vb, va), isNan(vb));
          let m = v128.bitselect(vb, va, sb);
          const sc = v128.or(f32x4.gt(vc, m), isNan(vc));
          m = v128.bitselect(vc, m, sc);
          const sd = v128.or(f32x4.gt(vd, m), isNan(vd));
          const gv = v128.load(g + o);
          const later = v128.or(sc, sd);
          const da = tanhGradCell(gv, v128.andnot(all, v128.or(sb, later)), va);
          const db = tanhGradCell(gv, v128.andnot(sb, later), vb);
          const dc = tanhGradCell(gv, v128.andnot(sc, sd), vc);
          const dd2 = tanhGradCell(gv, sd, vd);
          v128.store(dx + a, da);
          v128.store(dx + bb, db);
          v128.store(dx + cc, dc);
          v128.store(dx + dd, dd2);
          const s = rowSum + o;
          v128.store(s, f32x4.add(v128.load(s), f32x4.add(f32x4.add(da, db), f32x4.add(dc, dd2))));
        }
        for (; k < c; k++) {
          const o = <usize>k << 2;
          const a = p00 + o;
          const bb = a + cb;
          const cc = a + rowStride;
          const dd = cc + cb;
          const va = load<f32>(y + a);
          const vb = load<f32>(y + bb);
          const vc = load<f32>(y + cc);
          const vd = load<f32>(y + dd);
          let w = 0;
          let m = va;
          if (vb > m || vb != vb) { w = 1; m = vb; }
          if (vc > m || vc != vc) { w = 2; m = vc; }
          if (vd > m || vd != vd) w = 3;
          const gv = load<f32>(g + o);
          const da: f32 = (1 - va * va) * (w == 0 ? gv : 0);
          const db: f32 = (1 - vb * vb) * (w == 1 ? gv : 0);
          const dc: f32 = (1 - vc * vc) * (w == 2 ? gv : 0);
          const dd2: f32 = (1 - vd * vd) * (w == 3 ? gv : 0);
          store<f32>(dx + a, da);
          store<f32>(dx + bb, db);
          store<f32>(dx + cc, dc);
          store<f32>(dx + dd, dd2);
          const s = rowSum + o;
          store<f32>(s, load<f32>(s) + ((da + db) + (dc + dd2)));
        }
        g += cb;
      }
      fold(rowSum, total, c);
    }
  }
  for (let k = 0; k < c; k++) store<f32>(dbias + (<usize>k << 2), <f32>load<f64>(total + (<usize>k << 3)));
}

// ---- Conv2D, stride 1, dilation 1, NHWC, out channels a multiple of 8 --------------------------
// out[b, oy, ox, o] = Σ over (i, j, k) of x[b, oy + i − padTop, ox + j − padLeft, k] · w[i, j, k, o].
// Four output pixels × 8 output channels are accumulated in registers over every tap and
// input channel (the filter rows and the input rows stay in L1 cache); pixels whose window
// crosses the left or right border go one at a time with bounds checks. Each output is one
// float32 sum in the fixed order (i, j, k): deterministic.

@inline function convPixel(x: usize, w: usize, out: usize, xRowBase: usize, b: i32, oy: i32, ox: i32, inH: i32, inW: i32, c: i32,
  kh: i32, kw: i32, padTop: i32, padLeft: i32, o0: usize, wTap: usize, xs: usize): void {
  let a0 = f32x4.splat(0); let a1 = f32x4.splat(0);
  for (let i = 0; i < kh; i++) {
    const iy = oy + i - padTop;
    if (iy < 0 || iy >= inH) continue;
    for (let j = 0; j < kw; j++) {
      const ix = ox + j - padLeft;
      if (ix < 0 || ix >= inW) continue;
      let xp = x + ((<usize>b * inH + iy) * inW + ix) * xs;
      let wp = w + <usize>(i * kw + j) * wTap + o0;
      const wStride = wTap / <usize>c;
      for (let k = 0; k < c; k++) {
        const s = v128.load32_splat(xp);
        a0 = f32x4.add(a0, f32x4.mul(s, v128.load(wp)));
        a1 = f32x4.add(a1, f32x4.mul(s, v128.load(wp, 16)));
        xp += 4;
        wp += wStride;
      }
    }
  }
  const op = out + xRowBase + o0;
  v128.store(op, a0);
  v128.store(op, a1, 16);
}

export function conv2dForward(x: usize, w: usize, out: usize, batch: i32, inH: i32, inW: i32, c: i32,
  outH: i32, outW: i32, o: i32, kh: i32, kw: i32, padTop: i32, padLeft: i32): void {
  const xs = <usize>c * 4; // bytes per input pixel
  const os = <usize>o * 4; // bytes per output pixel, and per filter row (i, j, k)
  const wTap = <usize>c * os; // bytes per filter tap (i, j)
  const lo = min(outW, max(0, padLeft));
  const hi = max(lo, min(outW, inW - kw + padLeft + 1));
  for (let b = 0; b < batch; b++) {
    for (let oy = 0; oy < outH; oy++) {
      const outRow = (<usize>b * outH + oy) * outW * os;
      for (let o0: usize = 0; o0 < os; o0 += 32) {
        let ox = 0;
        for (; ox < lo; ox++) convPixel(x, w, out, outRow + <usize>ox * os, b, oy, ox, inH, inW, c, kh, kw, padTop, padLeft, o0, wTap, xs);
        for (; ox + 4 <= hi; ox += 4) {
          let a0 = f32x4.splat(0); let a1 = f32x4.splat(0); let b0 = f32x4.splat(0); let b1 = f32x4.splat(0);
          let c0 = f32x4.splat(0); let c1 = f32x4.splat(0); let d0 = f32x4.splat(0); let d1 = f32x4.splat(0);
          for (let i = 0; i < kh; i++) {
            const iy = oy + i - padTop;
            if (iy < 0 || iy >= inH) continue;
            let xp = x + ((<usize>b * inH + iy) * inW + (ox - padLeft)) * xs;
            let wp = w + <usize>(i * kw) * wTap + o0;
            // taps j = 0..kw-1 and channels k are contiguous in both x (one row) and w
            const n = kw * c;
            for (let q = 0; q < n; q++) {
              const g0 = v128.load(wp);
              const g1 = v128.load(wp, 16);
              let s = v128.load32_splat(xp);
              a0 = f32x4.add(a0, f32x4.mul(s, g0)); a1 = f32x4.add(a1, f32x4.mul(s, g1));
              s = v128.load32_splat(xp + xs);
              b0 = f32x4.add(b0, f32x4.mul(s, g0)); b1 = f32x4.add(b1, f32x4.mul(s, g1));
              s = v128.load32_splat(xp + 2 * xs);
              c0 = f32x4.add(c0, f32x4.mul(s, g0)); c1 = f32x4.add(c1, f32x4.mul(s, g1));
              s = v128.load32_splat(xp + 3 * xs);
              d0 = f32x4.add(d0, f32x4.mul(s, g0)); d1 = f32x4.add(d1, f32x4.mul(s, g1));
              xp += 4;
              wp += os;
            }
          }
          const op = out + outRow + <usize>ox * os + o0;
          v128.store(op, a0); v128.store(op, a1, 16);
          v128.store(op + os, b0); v128.store(op + os, b1, 16);
          v128.store(op + 2 * os, c0); v128.store(op + 2 * os, c1, 16);
          v128.store(op + 3 * os, d0); v128.store(op + 3 * os, d1, 16);
        }
        for (; ox < outW; ox++) convPixel(x, w, out, outRow + <usize>ox * os, b, oy, ox, inH, inW, c, kh, kw, padTop, padLeft, o0, wTap, xs);
      }
    }
  }
}
