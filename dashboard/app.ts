// The dashboard page (bundled by esbuild with uPlot; no inline script, nothing remote):
// loads the run's snapshot from the event stream, applies updates as they come, and
// draws curves, the workers table, the events and the configuration. The root element's
// data attributes (data-status, data-epochs, data-workers, data-final-accuracy) let tests
// read what the page shows. The server sends updates in batches a few times a second; the
// page redraws at most every REDRAW_MS, and only the parts whose data changed.
import uPlot from 'uplot';
import 'uplot/dist/uPlot.min.css';
import './app.css';
import { applyUpdate, emptySnapshot, type EpochPoint, type RunSnapshot, type RunUpdate } from '../coordinator/dashboard/run-state.js';

const MAX_STEPS = 5000;
const MAX_EVENTS = 500;
const REDRAW_MS = 1000;

function el<K extends keyof HTMLElementTagNameMap>(tag: K, attrs: Record<string, string> = {}, text = ''): HTMLElementTagNameMap[K] {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  if (text) e.textContent = text;
  return e;
}

const fmtSeconds = (s: number): string => {
  if (!Number.isFinite(s)) return '?';
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const sec = Math.floor(s % 60);
  return h > 0 ? `${h}h${String(m).padStart(2, '0')}m` : m > 0 ? `${m}m${String(sec).padStart(2, '0')}s` : `${sec}s`;
};
const fmtTime = (ms: number): string => new Date(ms).toLocaleTimeString();

interface Chart {
  readonly plot: uPlot;
  readonly data: () => uPlot.AlignedData;
}

function chart(parent: HTMLElement, id: string, title: string, xLabel: string, series: { label: string; stroke: string }[], data: () => uPlot.AlignedData): Chart {
  const box = el('section', { class: 'chart', id });
  parent.append(box);
  const plot = new uPlot({
    title, width: 410, height: 240,
    scales: { x: { time: false } },
    // Epochs and steps are whole numbers: no ticks in between.
    axes: [{ label: xLabel, incrs: [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000, 20000, 50000] }, {}],
    series: [{ label: xLabel }, ...series.map((s) => ({ label: s.label, stroke: s.stroke, width: 2, spanGaps: true, points: { show: true, size: 5 } }))],
  }, data(), box);
  return { plot, data };
}

function main(): void {
  const root = document.getElementById('app')!;
  let state: RunSnapshot = emptySnapshot('run');

  const header = el('header');
  const title = el('h1', {}, 'Flock');
  const status = el('span', { class: 'status', id: 'status' });
  const eta = el('span', { class: 'eta', id: 'eta' });
  const final = el('span', { class: 'final', id: 'final-accuracy' });
  const verified = el('span', { class: 'eta', id: 'verification' });
  header.append(title, status, eta, final, verified);
  const charts = el('div', { class: 'charts' });
  root.append(header, charts);

  // Epoch curves of this run and of any runs overlaid: x is every epoch any of them has.
  const runs = (): { label: string; epochs: readonly EpochPoint[] }[] => [{ label: '', epochs: state.epochs }, ...(state.others ?? [])];
  const epochData = (train: (e: EpochPoint) => number, validation: (e: EpochPoint) => number) => (): uPlot.AlignedData => {
    const xs = [...new Set(runs().flatMap((r) => r.epochs.map((e) => e.epoch)))].sort((a, b) => a - b);
    const column = (epochs: readonly EpochPoint[], f: (e: EpochPoint) => number): (number | null)[] => {
      const by = new Map(epochs.map((e) => [e.epoch, f(e)]));
      return xs.map((x) => by.get(x) ?? null);
    };
    return [xs, ...runs().flatMap((r) => [column(r.epochs, train), column(r.epochs, validation)])];
  };
  const OTHER_COLOURS = [['#9467bd', '#ff7f0e'], ['#17becf', '#8c564b'], ['#7f7f7f', '#e377c2']];
  const epochSeries = (): { label: string; stroke: string }[] => runs().flatMap((r, i) => {
    const [train, validation] = i === 0 ? ['#1f77b4', '#d62728'] : OTHER_COLOURS[(i - 1) % OTHER_COLOURS.length]!;
    const prefix = r.label ? `${r.label} ` : '';
    return [{ label: `${prefix}train`, stroke: train! }, { label: `${prefix}validation`, stroke: validation! }];
  });
  let plots: Chart[] = [];
  let overlaid = -1;
  const buildCharts = (): void => {
    for (const c of plots) c.plot.destroy();
    charts.replaceChildren();
    overlaid = state.others?.length ?? 0;
    plots = [
      chart(charts, 'loss-chart', 'loss per epoch', 'epoch', epochSeries(), epochData((e) => e.trainLoss, (e) => e.valLoss)),
      chart(charts, 'accuracy-chart', 'accuracy per epoch', 'epoch', epochSeries(), epochData((e) => e.trainAccuracy, (e) => e.valAccuracy)),
      chart(charts, 'throughput-chart', 'images/s per step', 'step', [{ label: 'images/s', stroke: '#2ca02c' }],
        () => [state.steps.map((s) => s.globalStep), state.steps.map((s) => s.imagesPerSec)]),
    ];
  };
  buildCharts();

  const workersTable = el('table', { id: 'workers' });
  const eventsList = el('ol', { id: 'events' });
  const configTable = el('table', { id: 'config' });
  const panels = el('div', { class: 'panels' });
  const section = (name: string, body: HTMLElement, wide = false): HTMLElement => {
    const s = el('section', { class: wide ? 'panel wide' : 'panel' });
    s.append(el('h2', {}, name), body);
    return s;
  };
  panels.append(section('Workers', workersTable, true), section('Events', eventsList), section('Configuration', configTable));
  root.append(panels);

  const renderWorkers = (): void => {
    const head = el('tr');
    for (const h of ['name', 'backend', 'adapter', 'units done', 'images/s', 'compute ms/mb', 'comm ms/mb', 'last seen', 'state']) head.append(el('th', {}, h));
    const rows = state.workers.map((w) => {
      const tr = el('tr', {
        'data-worker': w.name, 'data-state': w.state, 'data-adapter': w.adapter,
        'data-compute-ms': w.computeMs.toFixed(1), 'data-comm-ms': w.commMs.toFixed(1),
      });
      const share = w.computeMs + w.commMs > 0 ? ` (${Math.round((100 * w.commMs) / (w.computeMs + w.commMs))} %)` : '';
      const cells = [
        w.name, w.backend, w.adapter || '-', String(w.unitsDone), w.imagesPerSec.toFixed(0), w.computeMs.toFixed(1), `${w.commMs.toFixed(1)}${share}`,
        fmtTime(w.lastSeen), w.state === 'gone' ? `gone: ${w.leftReason ?? ''}` : w.state,
      ];
      for (const c of cells) tr.append(el('td', {}, c));
      return tr;
    });
    workersTable.replaceChildren(head, ...rows);
  };
  const renderEvents = (): void => {
    eventsList.replaceChildren(...state.events.slice().reverse().map((e) => el('li', { class: `event-${e.kind}`, 'data-kind': e.kind }, `${fmtTime(e.time)}  ${e.text}`)));
  };
  const renderConfig = (): void => {
    const rows = Object.entries(state.config ?? {}).map(([k, v]) => {
      const tr = el('tr');
      tr.append(el('th', {}, k), el('td', {}, typeof v === 'string' ? v : JSON.stringify(v)));
      return tr;
    });
    configTable.replaceChildren(...rows);
  };
  const renderHeader = (): void => {
    title.textContent = `Flock: ${state.label}`;
    status.textContent = state.status;
    const last = state.steps.at(-1);
    eta.textContent = last && state.status === 'training'
      ? `epoch ${last.epoch}, step ${last.step}/${last.stepsPerEpoch}` + (state.eta ? `, ETA epoch ${fmtSeconds(state.eta.epochSeconds)}, run ${fmtSeconds(state.eta.runSeconds)}` : '')
      : '';
    final.textContent = state.finalAccuracy !== undefined ? `final validation accuracy ${state.finalAccuracy.toFixed(4)}` : '';
    const v = last?.verification;
    verified.textContent = v
      ? `verified: ${v.audits ?? 0} audits, ${v.validationChecks ?? 0} validation checks, ${v.guardFailures ?? 0} guard failures, ${v.quarantines ?? 0} quarantined, ${v.replayedSteps ?? 0} steps replayed`
      : '';
    root.dataset.status = state.status;
    root.dataset.epochs = String(state.epochs.length);
    root.dataset.steps = String(state.steps.length);
    root.dataset.workers = String(state.workers.filter((w) => w.state === 'ready').length);
    root.dataset.workerNames = state.workers.map((w) => w.name).join(',');
    root.dataset.validationAccuracy = state.epochs.map((e) => e.valAccuracy).join(',');
    if (state.finalAccuracy !== undefined) root.dataset.finalAccuracy = String(state.finalAccuracy);
  };
  // What changed since the last redraw: only that is drawn again.
  const ALL = ['epochs', 'steps', 'workers', 'events', 'config'] as const;
  type Part = (typeof ALL)[number];
  const dirty = new Set<Part>(ALL);
  const touched = (u: RunUpdate): Part | undefined => {
    switch (u.type) {
      case 'epoch': return 'epochs';
      case 'step': case 'steps': return 'steps';
      case 'workers': return 'workers';
      case 'event': return 'events';
      case 'config': return 'config';
      case 'status': return undefined;
    }
  };
  const renderAll = (): void => {
    if ((state.others?.length ?? 0) !== overlaid) {
      buildCharts();
      dirty.add('epochs').add('steps');
    }
    if (dirty.has('epochs')) for (const c of plots.slice(0, 2)) c.plot.setData(c.data());
    if (dirty.has('steps')) plots[2]?.plot.setData(plots[2].data());
    if (dirty.has('workers')) renderWorkers();
    if (dirty.has('events')) renderEvents();
    if (dirty.has('config')) renderConfig();
    dirty.clear();
    renderHeader();
  };

  // Redraws at most every REDRAW_MS however fast updates arrive, so a browser on the same
  // machine as the run takes little CPU from it.
  let pending = false;
  const schedule = (): void => {
    if (pending) return;
    pending = true;
    setTimeout(() => requestAnimationFrame(() => {
      pending = false;
      renderAll();
    }), REDRAW_MS);
  };

  const source = new EventSource('/events');
  source.addEventListener('snapshot', (e) => {
    state = JSON.parse((e as MessageEvent<string>).data) as RunSnapshot;
    for (const p of ALL) dirty.add(p);
    schedule();
  });
  source.addEventListener('updates', (e) => {
    for (const u of JSON.parse((e as MessageEvent<string>).data) as RunUpdate[]) {
      state = applyUpdate(state, u, MAX_STEPS, MAX_EVENTS);
      const part = touched(u);
      if (part) dirty.add(part);
    }
    schedule();
  });
  source.addEventListener('error', () => {
    // A finished run's coordinator goes away: keep what is shown and stop retrying.
    if (state.status === 'done' || state.status === 'stopped') source.close();
    root.dataset.connected = 'false';
  });
  source.addEventListener('open', () => {
    root.dataset.connected = 'true';
  });
  renderAll();
}

main();
