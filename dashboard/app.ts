// The dashboard page (bundled by esbuild with uPlot; no inline script, nothing remote):
// loads the run's snapshot from the event stream, applies updates as they come, and
// draws curves, the workers table, the events and the configuration. The root element's
// data attributes (data-status, data-epochs, data-workers, data-final-accuracy) let tests
// read what the page shows.
//
// It is built to cost a run next to nothing when its browser shares the run's CPUs: the
// server sends updates every 2 s; the page redraws at most every REDRAW_MS and only
// what changed (cells, attributes and texts are written only when their value differs, so
// an unchanged part is neither laid out nor painted again); the images/s curve is
// downsampled to MAX_STEP_POINTS points; charts are updated, never recreated; a hidden page
// draws nothing, and one hidden for HIDDEN_CLOSE_MS closes its stream until shown again.
import uPlot from 'uplot';
import 'uplot/dist/uPlot.min.css';
import './app.css';
import { applyUpdate, emptySnapshot, type EpochPoint, type RunSnapshot, type RunUpdate, type StepPoint, type WorkerRow } from '../coordinator/dashboard/run-state.js';
import { StepSeries } from '../coordinator/dashboard/step-series.js';

const MAX_EVENTS = 500;
/** The images/s curve's canvas is about 400 px wide: more points would not show. */
const MAX_STEP_POINTS = 400;
const REDRAW_MS = 2000;
const HIDDEN_CLOSE_MS = 60_000;

function el<K extends keyof HTMLElementTagNameMap>(tag: K, attrs: Record<string, string> = {}, text = ''): HTMLElementTagNameMap[K] {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  if (text) e.textContent = text;
  return e;
}

/** Writes only a changed text: even an equal one would make the browser lay out and paint again. */
function setText(e: Node, text: string): void {
  if (e.textContent !== text) e.textContent = text;
}

function setDataset(e: HTMLElement, values: Record<string, string>): void {
  for (const [k, v] of Object.entries(values)) if (e.dataset[k] !== v) e.dataset[k] = v;
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

interface ChartSeries {
  readonly label: string;
  readonly stroke: string;
  /** Draw a dot at each point (the epoch curves have few; the per-step curve is a line). */
  readonly dots: boolean;
}

function chart(parent: HTMLElement, id: string, title: string, xLabel: string, series: ChartSeries[], data: () => uPlot.AlignedData): Chart {
  const box = el('section', { class: 'chart', id });
  parent.append(box);
  const plot = new uPlot({
    title, width: 410, height: 240,
    scales: { x: { time: false } },
    // Epochs and steps are whole numbers: no ticks in between.
    axes: [{ label: xLabel, incrs: [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000, 20000, 50000] }, {}],
    series: [{ label: xLabel }, ...series.map((s) => ({ label: s.label, stroke: s.stroke, width: 2, spanGaps: true, points: s.dots ? { show: true, size: 5 } : { show: false } }))],
  }, data(), box);
  return { plot, data };
}

const WORKER_COLUMNS = ['name', 'backend', 'adapter', 'units done', 'images/s', 'compute ms/mb', 'comm ms/mb', 'last seen', 'state'];

const workerCells = (w: WorkerRow): string[] => {
  const share = w.computeMs + w.commMs > 0 ? ` (${Math.round((100 * w.commMs) / (w.computeMs + w.commMs))} %)` : '';
  return [
    w.name, w.backend, w.adapter || '-', String(w.unitsDone), w.imagesPerSec.toFixed(0), w.computeMs.toFixed(1), `${w.commMs.toFixed(1)}${share}`,
    fmtTime(w.lastSeen), w.state === 'gone' ? `gone: ${w.leftReason ?? ''}` : w.state,
  ];
};

function main(): void {
  const root = document.getElementById('app')!;
  /** The run as the page knows it; its steps live in `series` and `lastStep` instead. */
  let state: RunSnapshot = emptySnapshot('run');
  const series = new StepSeries(MAX_STEP_POINTS);
  let lastStep: StepPoint | undefined;

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
  const epochSeries = (): ChartSeries[] => runs().flatMap((r, i) => {
    const [train, validation] = i === 0 ? ['#1f77b4', '#d62728'] : OTHER_COLOURS[(i - 1) % OTHER_COLOURS.length]!;
    const prefix = r.label ? `${r.label} ` : '';
    return [{ label: `${prefix}train`, stroke: train!, dots: true }, { label: `${prefix}validation`, stroke: validation!, dots: true }];
  });
  let plots: Chart[] = [];
  let overlaid = -1;
  /** Only when the set of curves changes (runs overlaid): otherwise charts get new data. */
  const buildCharts = (): void => {
    for (const c of plots) c.plot.destroy();
    charts.replaceChildren();
    overlaid = state.others?.length ?? 0;
    plots = [
      chart(charts, 'loss-chart', 'loss per epoch', 'epoch', epochSeries(), epochData((e) => e.trainLoss, (e) => e.valLoss)),
      chart(charts, 'accuracy-chart', 'accuracy per epoch', 'epoch', epochSeries(), epochData((e) => e.trainAccuracy, (e) => e.valAccuracy)),
      chart(charts, 'throughput-chart', 'images/s per step', 'step', [{ label: 'images/s', stroke: '#2ca02c', dots: false }], () => series.data()),
    ];
  };
  buildCharts();

  const workersTable = el('table', { id: 'workers' });
  const workersHead = el('tr');
  for (const h of WORKER_COLUMNS) workersHead.append(el('th', {}, h));
  const workersBody = el('tbody');
  workersTable.append(el('thead'), workersBody);
  workersTable.tHead!.append(workersHead);
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

  // Rows stay in place and only their changed cells are written.
  const workerRows = new Map<number, { tr: HTMLTableRowElement; cells: HTMLTableCellElement[] }>();
  const renderWorkers = (): void => {
    const ids = new Set(state.workers.map((w) => w.id));
    for (const [id, row] of workerRows) {
      if (ids.has(id)) continue;
      row.tr.remove();
      workerRows.delete(id);
    }
    for (const w of state.workers) {
      let row = workerRows.get(w.id);
      if (!row) {
        const tr = el('tr');
        const cells = WORKER_COLUMNS.map(() => el('td'));
        tr.append(...cells);
        workersBody.append(tr);
        row = { tr, cells };
        workerRows.set(w.id, row);
      }
      setDataset(row.tr, { worker: w.name, state: w.state, adapter: w.adapter, computeMs: w.computeMs.toFixed(1), commMs: w.commMs.toFixed(1) });
      workerCells(w).forEach((text, i) => setText(row.cells[i]!, text));
    }
  };
  // The list shows the newest first: new events are put on top, the oldest beyond MAX_EVENTS dropped.
  let eventsReceived = 0;
  let eventsShown = 0;
  const renderEvents = (): void => {
    const fresh = Math.min(eventsReceived - eventsShown, state.events.length);
    if (fresh <= 0) return;
    eventsList.prepend(...state.events.slice(-fresh).reverse().map((e) => el('li', { class: `event-${e.kind}`, 'data-kind': e.kind }, `${fmtTime(e.time)}  ${e.text}`)));
    while (eventsList.childElementCount > MAX_EVENTS) eventsList.lastElementChild!.remove();
    eventsShown = eventsReceived;
  };
  const renderConfig = (): void => {
    const rows = Object.entries(state.config ?? {}).map(([k, v]) => {
      const tr = el('tr');
      tr.append(el('th', {}, k), el('td', {}, typeof v === 'string' ? v : JSON.stringify(v)));
      return tr;
    });
    configTable.replaceChildren(...rows);
  };
  let draws = 0;
  const renderHeader = (): void => {
    setText(title, `Flock: ${state.label}`);
    setText(status, state.status);
    const last = lastStep;
    setText(eta, last && state.status === 'training'
      ? `epoch ${last.epoch}, step ${last.step}/${last.stepsPerEpoch}` + (state.eta ? `, ETA epoch ${fmtSeconds(state.eta.epochSeconds)}, run ${fmtSeconds(state.eta.runSeconds)}` : '')
      : '');
    setText(final, state.finalAccuracy !== undefined ? `final validation accuracy ${state.finalAccuracy.toFixed(4)}` : '');
    const v = last?.verification;
    setText(verified, v
      ? `verified: ${v.audits ?? 0} audits, ${v.validationChecks ?? 0} validation checks, ${v.guardFailures ?? 0} guard failures, ${v.quarantines ?? 0} quarantined, ${v.replayedSteps ?? 0} steps replayed`
      : '');
    setDataset(root, {
      status: state.status,
      epochs: String(state.epochs.length),
      steps: String(series.steps),
      workers: String(state.workers.filter((w) => w.state === 'ready').length),
      workerNames: state.workers.map((w) => w.name).join(','),
      validationAccuracy: state.epochs.map((e) => e.valAccuracy).join(','),
      ...(state.finalAccuracy !== undefined ? { finalAccuracy: String(state.finalAccuracy) } : {}),
      // How often the page drew (the dashboard benchmark checks that it kept drawing).
      draws: String(++draws),
    });
  };
  // What changed since the last redraw: only that is drawn again.
  const ALL = ['epochs', 'steps', 'workers', 'events', 'config'] as const;
  type Part = (typeof ALL)[number];
  const dirty = new Set<Part>(ALL);
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

  // One draw per REDRAW_MS at most, in an animation frame, and none while the page is hidden.
  let lastDraw = -Infinity;
  let timer: ReturnType<typeof setTimeout> | undefined;
  let frame: number | undefined;
  const schedule = (): void => {
    if (timer !== undefined || frame !== undefined || document.hidden) return;
    timer = setTimeout(() => {
      timer = undefined;
      frame = requestAnimationFrame(() => {
        frame = undefined;
        lastDraw = performance.now();
        renderAll();
      });
    }, Math.max(0, lastDraw + REDRAW_MS - performance.now()));
  };

  /** The part of the page each kind of update changes. */
  const TOUCHES: Record<RunUpdate['type'], Part | undefined> = { step: 'steps', steps: 'steps', event: 'events', epoch: 'epochs', workers: 'workers', config: 'config', status: undefined };
  const apply = (u: RunUpdate): void => {
    const part = TOUCHES[u.type];
    if (part) dirty.add(part);
    if (u.type === 'step' || u.type === 'steps') {
      const steps = u.type === 'step' ? [u.step] : u.steps;
      for (const s of steps) series.add(s);
      lastStep = steps.at(-1) ?? lastStep;
      state = { ...state, eta: u.eta };
      return;
    }
    if (u.type === 'event') eventsReceived++;
    state = applyUpdate(state, u, MAX_EVENTS);
  };

  let source: EventSource | undefined;
  const connect = (): void => {
    const s = new EventSource('/events');
    source = s;
    s.addEventListener('snapshot', (e) => {
      const snapshot = JSON.parse((e as MessageEvent<string>).data) as RunSnapshot;
      series.reset(snapshot.steps);
      lastStep = snapshot.steps.at(-1);
      state = { ...snapshot, steps: [] };
      eventsReceived = state.events.length;
      eventsShown = 0;
      eventsList.replaceChildren();
      for (const p of ALL) dirty.add(p);
      schedule();
    });
    s.addEventListener('updates', (e) => {
      for (const u of JSON.parse((e as MessageEvent<string>).data) as RunUpdate[]) apply(u);
      schedule();
    });
    s.addEventListener('error', () => {
      // A finished run's coordinator goes away: keep what is shown and stop retrying.
      if (state.status === 'done' || state.status === 'stopped') s.close();
      root.dataset.connected = 'false';
    });
    s.addEventListener('open', () => {
      root.dataset.connected = 'true';
    });
  };

  // Hidden (another tab, minimised): no drawing; after HIDDEN_CLOSE_MS, no stream either.
  let hiddenTimer: ReturnType<typeof setTimeout> | undefined;
  document.addEventListener('visibilitychange', () => {
    clearTimeout(hiddenTimer);
    hiddenTimer = undefined;
    if (document.hidden) {
      hiddenTimer = setTimeout(() => {
        if (source?.readyState === EventSource.CLOSED) return;
        source?.close();
        source = undefined;
        root.dataset.connected = 'false';
      }, HIDDEN_CLOSE_MS);
      return;
    }
    if (source === undefined) connect();
    if (dirty.size > 0) schedule();
  });

  connect();
  renderAll();
}

main();
