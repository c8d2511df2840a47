// The Node (V8) flags Flock's processes run with. Measured (README, "Node's heap flag" and the
// `peer` benchmark): TensorFlow.js leaves about 0.6 MB of short-lived engine objects per
// training step, and with V8's default heap sizing (a limit of ~46 MB against ~22 MB of live
// data) a worker ran a full mark-compact every ~10 steps: 2-10 ms each, on the critical path
// of a synchronous step, plus marking threads that compete for the cores. With a 128 MB
// initial old generation: 3 mark-compacts a run instead of ~40 a worker, for about 12 MB
// more resident memory at peak.
//
// The flag is a V8 option Node does not accept in NODE_OPTIONS, so it must be on the command
// line: the CLIs' shebangs (`npx worker`, `npx coordinator`), the npm scripts, the deploy
// files and the local workers `coordinator start --spawn-workers` starts all pass it.
export const NODE_FLAGS = ['--initial-old-space-size=128'] as const;

/** Whether this process runs with NODE_FLAGS (the caller passes process.execArgv). */
function hasNodeFlags(execArgv: readonly string[]): boolean {
  return NODE_FLAGS.every((flag) => execArgv.includes(flag));
}

/** For the CLIs' start-up log: what to add when this process was started without NODE_FLAGS. */
export function nodeFlagsHint(execArgv: readonly string[], command: 'worker' | 'coordinator'): string | undefined {
  if (hasNodeFlags(execArgv)) return undefined;
  const flags = NODE_FLAGS.join(' ');
  return `started without ${flags}: each training step may wait for a full garbage collection (measured about 10 % slower); ` +
    `run 'node ${flags} dist/${command}/cli.js …' or 'npx ${command} …'`;
}
