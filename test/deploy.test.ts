// The launch recipes in deploy/ (issue 10) against the CLI they launch: the Dockerfile is
// linted (dockerfile-utils) and parsed (dockerfile-ast), the compose file and Kubernetes
// manifests parsed (yaml), the Slurm script syntax-checked (bash -n); every coordinator and
// worker command in them uses only flags and choice values the CLIs' --help lists, the port
// they agree on, environment variables the CLIs read, absolute paths inside a mounted volume,
// and health paths the coordinator serves. The runtime image's dist/ must hold everything the
// CLIs import, and their packages must be production dependencies (`npm ci --omit=dev`).
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync, readdirSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, it } from 'node:test';
import { DockerfileParser, type Dockerfile } from 'dockerfile-ast';
import { validate as lintDockerfile } from 'dockerfile-utils';
import { parseAllDocuments } from 'yaml';
import { NODE_FLAGS } from '../shared/node-flags.js';
import { COORDINATOR_CLI, WORKER_CLI } from './child-procs.js';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const DIST = join(ROOT, 'dist');
const DEPLOY = join(ROOT, 'deploy');
const PORT = '7070';
const read = (p: string): string => readFileSync(join(DEPLOY, p), 'utf8');

interface CliSpec {
  readonly flags: Set<string>;
  readonly choices: Map<string, string[]>;
  readonly env: Set<string>;
}

/** Flags, choice lists and $FLOCK_* variables from a CLI's --help (commander wraps lines: blocks are rejoined). */
function cliSpec(script: string, args: string[]): CliSpec {
  const help = execFileSync(process.execPath, [script, ...args, '--help'], { encoding: 'utf8' });
  const flags = new Set<string>();
  const choices = new Map<string, string[]>();
  const options = help.slice(help.indexOf('Options:'));
  for (const block of options.split(/\n(?= {2}-)/)) {
    const text = block.replace(/\s+/g, ' ').trim();
    // The flag that starts the block (descriptions mention other flags too).
    const own = [...text.matchAll(/^(?:-[a-z], )?(--[a-z][a-z0-9-]*)/g)].map((m) => m[1]!);
    for (const n of own) flags.add(n);
    const ch = /\(choices: ([^)]*?)(?:, default: [^)]*)?\)/.exec(text);
    if (ch && own[0]) choices.set(own[0], [...ch[1]!.matchAll(/"([^"]*)"/g)].map((m) => m[1]!));
  }
  const env = new Set([...help.matchAll(/\$(FLOCK_[A-Z_]+)/g)].map((m) => m[1]!));
  return { flags, choices, env };
}

const SPECS = {
  coordinator: cliSpec(COORDINATOR_CLI, ['start']),
  worker: cliSpec(WORKER_CLI, []),
};

interface Invocation {
  readonly where: string;
  readonly argv: readonly string[];
  /** Mount points of the container (absolute path arguments must lie under one); undefined: a host path. */
  readonly mounts?: readonly string[];
  readonly env: readonly string[];
}

/** Checks one `node dist/<cli> …` command line; returns its flags with their values. */
function checkInvocation(inv: Invocation): Map<string, string> {
  const [node, ...afterNode] = inv.argv;
  assert.equal(node, 'node', `${inv.where}: runs node`);
  // The V8 flags every Flock process runs with (shared/node-flags.ts), before the script.
  assert.deepEqual(afterNode.slice(0, NODE_FLAGS.length), [...NODE_FLAGS], `${inv.where}: node runs with ${NODE_FLAGS.join(' ')}`);
  const [script, ...rest] = afterNode.slice(NODE_FLAGS.length);
  assert.ok(script === 'dist/coordinator/cli.js' || script === 'dist/worker/cli.js', `${inv.where}: unknown script ${String(script)}`);
  assert.ok(existsSync(join(ROOT, script)), `${inv.where}: ${script} exists after the build`);
  const kind = script === 'dist/coordinator/cli.js' ? 'coordinator' : 'worker';
  const args = kind === 'coordinator' ? rest.slice(1) : rest;
  if (kind === 'coordinator') assert.equal(rest[0], 'start', `${inv.where}: coordinator runs start`);
  const spec = SPECS[kind];
  const seen = new Map<string, string>();
  for (let i = 0; i < args.length; i++) {
    const a = args[i]!;
    assert.ok(a.startsWith('--'), `${inv.where}: stray argument "${a}"`);
    assert.ok(spec.flags.has(a), `${inv.where}: ${kind} has no flag ${a}`);
    const next = args[i + 1];
    const value = next !== undefined && !next.startsWith('--') ? next : '';
    if (value !== '') i++;
    seen.set(a, value);
    const allowed = spec.choices.get(a);
    if (allowed && !value.startsWith('$')) assert.ok(allowed.includes(value), `${inv.where}: ${a} ${value} is not one of ${allowed.join(', ')}`);
    if (inv.mounts && value.startsWith('/')) {
      assert.ok(inv.mounts.some((m) => value === m || value.startsWith(`${m}/`)), `${inv.where}: ${a} ${value} is outside the mounted volumes ${inv.mounts.join(', ')}`);
    }
  }
  for (const e of inv.env) assert.ok(spec.env.has(e) || e === 'NODE_ENV', `${inv.where}: ${kind} reads no variable ${e}`);
  if (seen.has('--port')) assert.ok(seen.get('--port') === PORT || seen.get('--port')!.startsWith('$'), `${inv.where}: port ${seen.get('--port')}`);
  if (kind === 'coordinator' && seen.get('--host') !== undefined && seen.get('--host') !== '127.0.0.1') {
    assert.ok(seen.has('--tls-cert') && seen.has('--tls-key'), `${inv.where}: a coordinator on a network address serves TLS`);
  }
  if (kind === 'worker') {
    assert.ok(seen.has('--connect') && seen.has('--ca'), `${inv.where}: a worker connects with --ca`);
    assert.match(seen.get('--connect')!, /^wss:\/\//, `${inv.where}: over TLS`);
  }
  return seen;
}

/** Relative imports reachable from `entry` (compiled JS), and the packages they import. */
function importGraph(entry: string): { files: Set<string>; packages: Set<string> } {
  const files = new Set<string>();
  const packages = new Set<string>();
  const todo = [entry];
  while (todo.length > 0) {
    const file = todo.pop()!;
    if (files.has(file)) continue;
    files.add(file);
    const src = readFileSync(file, 'utf8');
    for (const m of src.matchAll(/(?:from\s*|import\s*\(\s*|^import\s+)['"]([^'"]+)['"]/gm)) {
      const spec = m[1]!;
      if (spec.startsWith('node:')) continue;
      if (spec.startsWith('.')) todo.push(resolve(dirname(file), spec));
      else packages.add(spec.startsWith('@') ? spec.split('/').slice(0, 2).join('/') : spec.split('/')[0]!);
    }
  }
  return { files, packages };
}

describe('deploy recipes', () => {
  it('the CLIs\' shebangs and the npm scripts that train run node with the V8 flags of shared/node-flags.ts', () => {
    for (const cli of [COORDINATOR_CLI, WORKER_CLI]) {
      assert.equal(readFileSync(cli, 'utf8').split('\n')[0], `#!/usr/bin/env -S node ${NODE_FLAGS.join(' ')}`, cli);
    }
    const scripts = (JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { scripts: Record<string, string> }).scripts;
    for (const name of ['start', 'bench']) assert.match(scripts[name]!, new RegExp(`&& node ${NODE_FLAGS.join(' ')} dist/`), `npm run ${name}`);
  });

  it('Dockerfile: lints clean, multi-stage, npm ci --omit=dev, non-root, init process, data volume; its CMD is a valid coordinator command', () => {
    const text = read('Dockerfile');
    assert.deepEqual(lintDockerfile(text).map((d) => `${d.range.start.line + 1}: ${typeof d.message === 'string' ? d.message : d.message.value}`), []);
    const df: Dockerfile = DockerfileParser.parse(text);
    const stages = df.getFROMs();
    assert.ok(stages.length >= 2, 'multi-stage');
    const build = stages.find((f) => f.getBuildStage() === 'build');
    assert.ok(build, 'a stage named build');
    const instructions = df.getInstructions();
    const runs = instructions.filter((i) => i.getKeyword() === 'RUN').map((i) => i.getArgumentsContent() ?? '');
    assert.ok(runs.some((r) => /npm ci\b.*--omit=dev/.test(r)), 'runtime dependencies come from npm ci --omit=dev');
    assert.ok(runs.some((r) => /npm run build/.test(r)), 'dist/ is built in the build stage');
    // Sources copied into the build stage exist in the repository.
    const finalStart = stages.at(-1)!.getRange().start.line;
    for (const c of df.getCOPYs()) {
      const args = c.getArguments().map((a) => a.getValue());
      const from = c.getFromFlag()?.getValue();
      for (const src of args.slice(0, -1)) {
        if (from === undefined) assert.ok(existsSync(join(ROOT, src)), `COPY ${src}: exists in the repository`);
        else if (src.startsWith('/app/dist/')) assert.ok(existsSync(join(DIST, src.slice('/app/dist/'.length))), `COPY --from=${from} ${src}: the build makes it`);
      }
    }
    const last = instructions.filter((i) => i.getRange().start.line >= finalStart);
    const user = last.filter((i) => i.getKeyword() === 'USER').at(-1)?.getArgumentsContent();
    assert.ok(user && !/^(root|0)(:|$)/.test(user), `runs as a non-root user (${String(user)})`);
    const entry = df.getENTRYPOINTs().at(-1)!.getJSONStrings().map((s) => s.getJSONValue());
    assert.ok(entry.some((e) => /tini$/.test(e)), 'an init process is PID 1');
    assert.ok(runs.some((r) => /apt-get install .*\btini\b/.test(r)), 'tini is installed');
    const volumes = last.filter((i) => i.getKeyword() === 'VOLUME').flatMap((i) => JSON.parse(i.getArgumentsContent() ?? '[]') as string[]);
    assert.ok(volumes.includes('/data') && volumes.includes('/checkpoints'), `volumes ${volumes.join(', ')}`);
    const expose = last.filter((i) => i.getKeyword() === 'EXPOSE').map((i) => i.getArgumentsContent());
    assert.deepEqual(expose, [PORT]);
    const envs = df.getENVs().flatMap((e) => e.getProperties().map((p) => [p.getName(), p.getValue() ?? ''] as const));
    const dataDir = envs.find(([k]) => k === 'FLOCK_DATA_DIR')?.[1];
    assert.ok(dataDir?.startsWith('/data/'), 'FLOCK_DATA_DIR points into the data volume');
    const cmd = df.getCMDs().at(-1)!.getJSONStrings().map((s) => s.getJSONValue());
    checkInvocation({ where: 'Dockerfile CMD', argv: cmd, mounts: volumes, env: envs.map(([k]) => k) });
  });

  it('the runtime image holds every file the CLIs import, and only production packages', () => {
    const text = read('Dockerfile');
    const copied = [...text.matchAll(/COPY --from=build \/app\/(dist\/[a-z]+)/g)].map((m) => m[1]!);
    const pkg = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { dependencies: Record<string, string>; optionalDependencies?: Record<string, string> };
    const prod = new Set([...Object.keys(pkg.dependencies), ...Object.keys(pkg.optionalDependencies ?? {})]);
    for (const cli of [COORDINATOR_CLI, WORKER_CLI]) {
      const { files, packages } = importGraph(cli);
      for (const f of files) {
        const rel = relative(ROOT, f);
        assert.ok(copied.some((d) => rel.startsWith(`${d}/`)), `${rel} (imported by ${relative(ROOT, cli)}) is not copied into the image`);
      }
      for (const p of packages) assert.ok(prod.has(p), `${p} (imported by ${relative(ROOT, cli)}) is not a production dependency`);
    }
    // The dashboard's and the browser worker's bundles are read from disk, not imported.
    assert.ok(copied.includes('dist/dashboard') && existsSync(join(DIST, 'dashboard')), 'the dashboard bundle is copied');
    assert.ok(copied.includes('dist/join') && existsSync(join(DIST, 'join')), 'the /join bundle is copied');
  });

  it('compose: one coordinator and N workers with valid commands, the shared port, volumes and health check', () => {
    const docs = parseAllDocuments(read('compose.yaml'));
    assert.equal(docs.length, 1);
    assert.deepEqual(docs[0]!.errors, []);
    const compose = docs[0]!.toJS() as { services: Record<string, { command: string[]; environment?: Record<string, string>; volumes?: string[]; ports?: string[]; healthcheck?: { test: string[] }; deploy?: { replicas: number } }> };
    const { coordinator, worker } = compose.services;
    assert.ok(coordinator && worker, 'services coordinator and worker');
    for (const [name, svc] of Object.entries(compose.services)) {
      const mounts = (svc.volumes ?? []).map((v) => v.split(':')[1]!);
      const seen = checkInvocation({ where: `compose ${name}`, argv: svc.command.map((a) => a.replace(/^\$\{FLOCK_WORKERS:-(\d+)\}$/, '$1')), mounts, env: Object.keys(svc.environment ?? {}) });
      if (name === 'worker') assert.equal(seen.get('--connect'), `wss://coordinator:${PORT}`, 'workers reach the coordinator service on its port');
    }
    assert.deepEqual(coordinator.ports, [`${PORT}:${PORT}`]);
    assert.ok(coordinator.healthcheck?.test.join(' ').includes('/healthz') && coordinator.healthcheck.test.join(' ').includes(`port:${PORT}`));
    assert.ok((worker.deploy?.replicas ?? 0) >= 1);
  });

  it('Kubernetes: Secret with the token, coordinator with a Service and probes, workers as a Deployment, GPU requests commented', () => {
    type Container = { name: string; command: string[]; args?: string[]; env?: { name: string; valueFrom?: { secretKeyRef?: { name: string; key: string } } }[]; ports?: { name?: string; containerPort: number }[];
      volumeMounts?: { name: string; mountPath: string }[]; livenessProbe?: Probe; readinessProbe?: Probe };
    type Probe = { httpGet?: { path: string; port: string | number; scheme?: string }; exec?: { command: string[] } };
    type PodSpec = { containers: Container[]; volumes?: { name: string; secret?: { secretName: string } }[] };
    type K8s = { kind: string; metadata: { name: string }; spec?: { replicas?: number; template?: { metadata: { labels: Record<string, string> }; spec: PodSpec }; selector?: Record<string, string>; ports?: { port: number; targetPort: string | number }[]; publishNotReadyAddresses?: boolean }; stringData?: Record<string, string> };
    const objects: K8s[] = [];
    let text = '';
    for (const f of readdirSync(join(DEPLOY, 'k8s')).filter((f) => f.endsWith('.yaml'))) {
      text += read(join('k8s', f));
      for (const d of parseAllDocuments(read(join('k8s', f)))) {
        assert.deepEqual(d.errors, [], f);
        objects.push(d.toJS() as K8s);
      }
    }
    const secret = objects.find((o) => o.kind === 'Secret' && o.metadata.name === 'flock-token');
    assert.ok(secret?.stringData?.token !== undefined, 'a Secret flock-token with key token');
    // Secrets made with kubectl (documented in secret.yaml) or defined here.
    const secrets = new Set([...objects.filter((o) => o.kind === 'Secret').map((o) => o.metadata.name), ...[...text.matchAll(/kubectl create secret \w+ ([a-z0-9-]+)/g)].map((m) => m[1]!)]);
    const service = objects.find((o) => o.kind === 'Service');
    assert.ok(service?.spec?.ports?.[0]?.port === Number(PORT), 'the Service listens on the port');
    assert.equal(service.spec.publishNotReadyAddresses, true, 'workers can reach the coordinator before /readyz says ready');
    const workloads = objects.filter((o) => o.spec?.template !== undefined);
    const httpPaths = readFileSync(join(DIST, 'coordinator/dashboard/http-routes.js'), 'utf8');
    let coordinatorSeen = false;
    let workers: K8s | undefined;
    for (const w of workloads) {
      const pod = w.spec!.template!.spec;
      for (const c of pod.containers) {
        const mounts = (c.volumeMounts ?? []).map((m) => m.mountPath);
        for (const m of c.volumeMounts ?? []) assert.ok(pod.volumes?.some((v) => v.name === m.name), `${w.metadata.name}: volume ${m.name} is defined`);
        for (const v of pod.volumes ?? []) if (v.secret) assert.ok(secrets.has(v.secret.secretName), `${w.metadata.name}: secret ${v.secret.secretName} is defined or documented`);
        for (const e of c.env ?? []) {
          const ref = e.valueFrom?.secretKeyRef;
          if (ref) assert.ok(objects.some((o) => o.kind === 'Secret' && o.metadata.name === ref.name && o.stringData?.[ref.key] !== undefined), `${ref.name}/${ref.key} exists`);
        }
        const seen = checkInvocation({ where: `${w.kind} ${w.metadata.name}`, argv: [...c.command, ...(c.args ?? [])], mounts, env: (c.env ?? []).map((e) => e.name) });
        if (c.command.includes('dist/coordinator/cli.js')) {
          coordinatorSeen = true;
          // The Service selects this pod and targets its port.
          const labels = w.spec!.template!.metadata.labels;
          assert.ok(Object.entries(service.spec.selector ?? {}).every(([k, v]) => labels[k] === v), 'the Service selects the coordinator');
          const port = c.ports?.find((p) => p.containerPort === Number(PORT));
          assert.ok(port && (service.spec.ports[0].targetPort === port.name || service.spec.ports[0].targetPort === port.containerPort));
          const live = c.livenessProbe?.httpGet;
          assert.ok(live && live.path === '/healthz' && (live.port === port.name || live.port === port.containerPort), 'liveness on /healthz');
          assert.equal(live.scheme, seen.has('--tls-cert') ? 'HTTPS' : undefined);
          const ready = c.readinessProbe?.exec?.command.join(' ') ?? c.readinessProbe?.httpGet?.path ?? '';
          assert.ok(ready.includes('/readyz') && (c.readinessProbe?.httpGet !== undefined || ready.includes(`port:${PORT}`)), 'readiness on /readyz');
          for (const p of ['/healthz', '/readyz']) assert.ok(httpPaths.includes(`'${p}'`), `the coordinator serves ${p}`);
        } else {
          workers = w;
          assert.equal(seen.get('--connect'), `wss://${service.metadata.name}:${PORT}`, 'workers connect to the Service');
        }
      }
    }
    assert.ok(coordinatorSeen, 'a coordinator workload');
    assert.equal(workers?.kind, 'Deployment');
    assert.ok(typeof workers.spec?.replicas === 'number' && workers.spec.replicas >= 1, 'replicas = number of workers');
    assert.match(text, /#\s*nvidia\.com\/gpu: 1/, 'NVIDIA GPU request, commented');
  });

  it('Slurm: valid bash; a coordinator and one worker per node through srun, with valid commands', () => {
    const file = join(DEPLOY, 'slurm/flock.sbatch');
    execFileSync('bash', ['-n', file]);
    const text = readFileSync(file, 'utf8').replace(/\\\n\s*/g, ' ');
    const sruns = text.split('\n').filter((l) => /^\s*srun\b/.test(l));
    assert.equal(sruns.length, 2, 'one srun for the coordinator, one for the workers');
    const invocations = sruns.map((l) => {
      const words = [...l.split(/\s+>\s+|\s+&\s*$/)[0]!.matchAll(/"([^"]*)"|(\S+)/g)].map((m) => m[1] ?? m[2]!);
      return { srun: words.slice(0, words.indexOf('node')), argv: words.slice(words.indexOf('node')) };
    });
    const coordinator = invocations.find((i) => i.argv.includes('dist/coordinator/cli.js'));
    const worker = invocations.find((i) => i.argv.includes('dist/worker/cli.js'));
    assert.ok(coordinator && worker);
    assert.ok(coordinator.srun.includes('--nodes=1') && coordinator.srun.includes('--ntasks=1'), 'one coordinator');
    assert.ok(worker.srun.includes('--ntasks-per-node=1') && worker.srun.some((w) => w.startsWith('--nodes=')), 'one worker per allocated node');
    const c = checkInvocation({ where: 'slurm coordinator', argv: coordinator.argv, env: ['FLOCK_TOKEN'] });
    assert.equal(c.get('--workers'), '$NODES');
    const w = checkInvocation({ where: 'slurm worker', argv: worker.argv, env: ['FLOCK_TOKEN'] });
    assert.equal(w.get('--connect'), 'wss://$COORDINATOR_HOST:$PORT');
    assert.equal(w.get('--ca'), c.get('--tls-cert'), 'workers trust the certificate the coordinator serves');
  });
});
