// Draws report panels side by side into a PNG (pngjs): a frame, the y range and the first
// and last x written in a 3x5 pixel digit font, and each series as a 2-pixel line with
// point markers. Returns the image and, per panel, the exact numbers it plotted.
import { PNG } from 'pngjs';
import type { Panel } from './curves.js';

export interface RenderOptions {
  readonly width: number;
  readonly height: number;
}

export const RENDER_DEFAULTS: RenderOptions = { width: 1200, height: 400 };

type Rgb = readonly [number, number, number];

// Rows of 3 bits, top to bottom.
const GLYPHS: Record<string, number[]> = {
  '0': [7, 5, 5, 5, 7], '1': [2, 6, 2, 2, 7], '2': [7, 1, 7, 4, 7], '3': [7, 1, 7, 1, 7], '4': [5, 5, 7, 1, 1],
  '5': [7, 4, 7, 1, 7], '6': [7, 4, 7, 5, 7], '7': [7, 1, 1, 1, 1], '8': [7, 5, 7, 5, 7], '9': [7, 5, 7, 1, 7],
  '.': [0, 0, 0, 0, 2], '-': [0, 0, 7, 0, 0], 'e': [0, 7, 7, 4, 7], '+': [0, 2, 7, 2, 0],
};

class Canvas {
  readonly png: PNG;
  constructor(readonly width: number, readonly height: number) {
    this.png = new PNG({ width, height });
    this.png.data.fill(255);
  }

  set(x: number, y: number, c: Rgb): void {
    const xi = Math.round(x);
    const yi = Math.round(y);
    if (xi < 0 || yi < 0 || xi >= this.width || yi >= this.height) return;
    const i = (yi * this.width + xi) * 4;
    this.png.data[i] = c[0];
    this.png.data[i + 1] = c[1];
    this.png.data[i + 2] = c[2];
    this.png.data[i + 3] = 255;
  }

  rect(x: number, y: number, w: number, h: number, c: Rgb): void {
    for (let dy = 0; dy < h; dy++) for (let dx = 0; dx < w; dx++) this.set(x + dx, y + dy, c);
  }

  line(x0: number, y0: number, x1: number, y1: number, c: Rgb, thick = 1): void {
    const n = Math.max(1, Math.ceil(Math.max(Math.abs(x1 - x0), Math.abs(y1 - y0))));
    for (let i = 0; i <= n; i++) this.rect(x0 + ((x1 - x0) * i) / n, y0 + ((y1 - y0) * i) / n, thick, thick, c);
  }

  text(x: number, y: number, s: string, c: Rgb, scale = 2): void {
    let cx = x;
    for (const ch of s) {
      const rows = GLYPHS[ch];
      if (rows) rows.forEach((bits, r) => { for (let b = 0; b < 3; b++) if (bits & (4 >> b)) this.rect(cx + b * scale, y + r * scale, scale, scale, c); });
      cx += 4 * scale;
    }
  }
}

const fmt = (v: number): string => (Math.abs(v) >= 1000 ? v.toFixed(0) : Math.abs(v) >= 1 ? v.toFixed(2) : v.toPrecision(3));

export interface Rendered {
  readonly png: Buffer;
  /** Per panel, per series: the points drawn, in data units. */
  readonly plotted: { readonly title: string; readonly series: { readonly label: string; readonly x: number[]; readonly y: number[] }[] }[];
}

export function renderPanels(panels: readonly Panel[], opts: Partial<RenderOptions> = {}): Rendered {
  const { width, height } = { ...RENDER_DEFAULTS, ...opts };
  const canvas = new Canvas(width, height);
  const panelWidth = Math.floor(width / Math.max(1, panels.length));
  const grey: Rgb = [120, 120, 120];
  const plotted = panels.map((panel, p) => {
    const left = p * panelWidth + 70;
    const right = (p + 1) * panelWidth - 15;
    const top = 20 + 12 * panel.series.length;
    const bottom = height - 30;
    const xs = panel.series.flatMap((s) => s.x);
    const ys = panel.series.flatMap((s) => s.y).filter(Number.isFinite);
    const [x0, x1] = [Math.min(...xs), Math.max(...xs)];
    let [y0, y1] = [Math.min(...ys), Math.max(...ys)];
    if (y0 === y1) [y0, y1] = [y0 - 0.5, y1 + 0.5];
    const px = (x: number): number => (x1 === x0 ? (left + right) / 2 : left + ((x - x0) / (x1 - x0)) * (right - left));
    const py = (y: number): number => bottom - ((y - y0) / (y1 - y0)) * (bottom - top);
    canvas.line(left, top, left, bottom, grey);
    canvas.line(left, bottom, right, bottom, grey);
    canvas.text(left - 66, top - 4, fmt(y1), grey);
    canvas.text(left - 66, bottom - 8, fmt(y0), grey);
    canvas.text(left, bottom + 8, String(x0), grey);
    canvas.text(right - 8 * String(x1).length, bottom + 8, String(x1), grey);
    // Legend: one colour swatch per series, in order.
    panel.series.forEach((s, i) => canvas.rect(left + 10, 8 + 12 * i, 24, 6, s.color));
    return {
      title: panel.title,
      series: panel.series.map((s) => {
        for (let i = 0; i < s.x.length; i++) {
          const [x, y] = [px(s.x[i]!), py(s.y[i]!)];
          if (i > 0) canvas.line(px(s.x[i - 1]!), py(s.y[i - 1]!), x, y, s.color, 2);
          canvas.rect(x - 2, y - 2, 5, 5, s.color);
        }
        return { label: s.label, x: [...s.x], y: [...s.y] };
      }),
    };
  });
  return { png: PNG.sync.write(canvas.png), plotted };
}
