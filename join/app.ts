// The /join page: runs a Flock worker in this tab. The same worker loop and session as the
// Node worker (worker/worker-loop.ts, bundled by esbuild), over the browser's WebSocket, on
// the best TensorFlow.js backend the browser has. Shows the worker's state; Stop leaves
// cleanly. The root element's data attributes (data-state, data-backend, data-micro-batches,
// data-images) let tests read what the page shows. Query: ?backend=auto|webgpu|wasm|wasm-st|
// webgl|cpu, ?threads=N (wasm), ?name=… (the name in the coordinator's logs).
import pino from 'pino';
import { systemClock } from '../shared/clock.js';
import { WorkerLoop } from '../worker/worker-loop.js';
import { BROWSER_BACKENDS, loadBrowserBackend, type BrowserBackendRequest } from './browser-backend.js';
import { browserSocketFactory } from './browser-socket.js';
import './join.css';

const RATE_WINDOW_MS = 10_000;
const MAX_LOG_LINES = 200;

type State = 'loading' | 'unauthorized' | 'connecting' | 'training' | 'reconnecting' | 'stopping' | 'stopped' | 'error';

function el<K extends keyof HTMLElementTagNameMap>(tag: K, attrs: Record<string, string> = {}, text = ''): HTMLElementTagNameMap[K] {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  if (text) e.textContent = text;
  return e;
}

function browserName(): string {
  const m = /(Edg|OPR|HeadlessChrome|Chrome|Firefox|Version)\/(\d+)/.exec(navigator.userAgent);
  if (!m) return 'browser';
  const brand = m[1] === 'Version' ? 'Safari' : m[1] === 'Edg' ? 'Edge' : m[1] === 'OPR' ? 'Opera' : m[1]!;
  return `${brand} ${m[2]!}`;
}

function randomTag(): string {
  const b = crypto.getRandomValues(new Uint8Array(2));
  return [...b].map((x) => x.toString(16).padStart(2, '0')).join('');
}

async function main(): Promise<void> {
  const params = new URLSearchParams(location.search);
  const root = document.getElementById('join')!;
  const fields = new Map<string, HTMLElement>();
  const table = el('dl');
  for (const [key, label] of [['state', 'state'], ['browser', 'browser'], ['backend', 'backend'], ['adapter', 'adapter'], ['worker', 'worker'], ['micro-batches', 'micro-batches done'], ['rate', 'images/s']] as const) {
    const dd = el('dd', { id: `f-${key}` }, '–');
    fields.set(key, dd);
    table.append(el('dt', {}, label), dd);
  }
  const stop = el('button', { id: 'stop', type: 'button' }, 'Stop');
  stop.disabled = true;
  const logBox = el('pre', { id: 'log' });
  root.append(el('h1', {}, 'Flock worker'), table, stop, el('h2', {}, 'log'), logBox);

  const show = (key: string, text: string): void => void (fields.get(key)!.textContent = text);
  const setState = (s: State, detail = ''): void => {
    root.dataset.state = s;
    show('state', detail ? `${s}: ${detail}` : s);
  };
  const logLine = (text: string): void => {
    const lines = (logBox.textContent ? logBox.textContent.split('\n') : []).concat(`${new Date().toLocaleTimeString()}  ${text}`);
    logBox.textContent = lines.slice(-MAX_LOG_LINES).join('\n');
  };

  setState('loading');
  const name = params.get('name') ?? `${browserName()} tab ${randomTag()}`;
  show('browser', browserName());
  root.dataset.name = name;

  // A refused WebSocket upgrade is invisible to script: ask first whether this tab may join.
  const access = await fetch('/join/status', { cache: 'no-store' });
  if (access.status === 401) return setState('unauthorized', 'open the join link the coordinator printed (it sets this tab\'s access cookie)');
  if (!access.ok) return setState('error', `the coordinator answered HTTP ${access.status}`);

  const requested = params.get('backend') ?? 'auto';
  if (!(BROWSER_BACKENDS as readonly string[]).includes(requested)) return setState('error', `unknown backend '${requested}' (one of ${BROWSER_BACKENDS.join(', ')})`);
  const threads = Number(params.get('threads') ?? '0');
  if (!Number.isInteger(threads) || threads < 0) return setState('error', `?threads must be a non-negative integer (got ${params.get('threads')})`);
  let loaded;
  try {
    loaded = await loadBrowserBackend({ request: requested as BrowserBackendRequest, threads, wasmPath: '/join/wasm/' });
  } catch (err) {
    return setState('error', err instanceof Error ? err.message : String(err));
  }
  root.dataset.backend = loaded.label;
  show('backend', loaded.label);
  show('adapter', loaded.adapter);
  for (const s of loaded.skipped) logLine(`backend skipped: ${s}`);

  // The worker's log records drive the page: every record also goes to the log box.
  let microBatches = 0;
  let images = 0;
  const recent: { at: number; count: number }[] = [];
  const onRecord = (o: Record<string, unknown>): void => {
    switch (o.event) {
      case 'connected':
        setState('connecting', 'saying hello');
        break;
      case 'welcomed':
        setState('training');
        show('worker', `${typeof o.workerId === 'number' ? o.workerId : '?'} (${name})`);
        break;
      case 'gradient': {
        microBatches += 1;
        images += Number(o.count ?? 0);
        const now = performance.now();
        recent.push({ at: now, count: Number(o.count ?? 0) });
        while (recent.length > 0 && now - recent[0]!.at > RATE_WINDOW_MS) recent.shift();
        const span = recent.length > 1 ? (now - recent[0]!.at) / 1000 : 0;
        const rate = span > 0 ? recent.slice(1).reduce((n, r) => n + r.count, 0) / span : 0;
        root.dataset.microBatches = String(microBatches);
        root.dataset.images = String(images);
        show('micro-batches', `${microBatches} (${images} images)`);
        show('rate', rate.toFixed(0));
        return;
      }
      case 'reconnecting':
        setState('reconnecting', typeof o.reason === 'string' ? o.reason : '');
        break;
    }
    if (typeof o.msg === 'string') logLine(o.msg);
  };
  const logger = pino({ level: 'debug', browser: { asObject: true, write: (o: object) => onRecord(o as Record<string, unknown>) } });
  logger.info({ event: 'backend', backend: loaded.label, detail: loaded.backend.detail }, `compute backend: ${loaded.backend.detail}`);

  const wsUrl = new URL('/', location.href);
  wsUrl.protocol = location.protocol === 'https:' ? 'wss:' : 'ws:';
  const worker = new WorkerLoop({ url: wsUrl.href, name, backendLabel: loaded.label }, { logger, backend: loaded.backend, socket: browserSocketFactory, clock: systemClock });
  stop.disabled = false;
  stop.addEventListener('click', () => {
    stop.disabled = true;
    setState('stopping');
    worker.close();
  });
  setState('connecting');
  try {
    const outcome = await worker.run();
    setState('stopped', outcome.reason);
  } catch (err) {
    setState('error', err instanceof Error ? err.message : String(err));
  }
  stop.disabled = true;
}

main().catch((err: unknown) => {
  const root = document.getElementById('join');
  if (root) {
    root.dataset.state = 'error';
    root.textContent = `Flock worker failed: ${err instanceof Error ? err.message : String(err)}`;
  }
});
