/**
 * Where the event loop was held, from a CPU profile: for each of the longest holds node-vmm.ts
 * recorded (--holds FILE), the functions the main thread ran during it (self time) and the
 * package's frames that called them. Run the VMM under node's profiler in the lab, then this there:
 *
 *   node --cpu-prof --cpu-prof-dir=/tmp/prof --cpu-prof-interval 500 -r @swc-node/register \
 *     scripts/vmm/node-vmm.ts ... --holds /tmp/holds.json
 *   node -r @swc-node/register scripts/vmm/hold-profile.ts /tmp/prof/*.cpuprofile /tmp/holds.json [N]
 *
 * The profiler slows JavaScript about twofold under the lab's TCG: the holds grow with it, but
 * what fills them does not change. A hold whose samples are all "(idle)" is the main thread not
 * being scheduled (the vCPU thread or another process had the lab's one CPU).
 */
import * as fs from 'node:fs';
import type { LoopHold } from './node-vmm';

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
  children?: number[];
}

interface Profile {
  nodes: ProfileNode[];
  startTime: number;
  samples: number[];
  timeDeltas: number[];
}

/** One sample: when (µs, CLOCK_MONOTONIC as process.hrtime), which node, how long until the next. */
type Sample = [at: number, node: number, us: number];

export function describeHolds(
  profile: Profile,
  startUs: number,
  holds: readonly LoopHold[],
  count: number,
): string[] {
  const nodes = new Map(profile.nodes.map((n) => [n.id, n]));
  const parent = new Map<number, number>();
  for (const n of profile.nodes) for (const c of n.children ?? []) parent.set(c, n.id);
  const name = (n: ProfileNode): string => {
    const f = n.callFrame;
    const file = f.url.replace(/^.*\/(dist|lib|node_modules|scripts)\//, '$1/');
    return `${f.functionName || '(anonymous)'} ${file}:${f.lineNumber + 1}`;
  };
  // The package's frames above a sample, innermost first: where in the VMM the time went.
  const ours = (id: number): string => {
    const out: string[] = [];
    for (let x: number | undefined = id; x !== undefined && out.length < 5; x = parent.get(x)) {
      const f = nodes.get(x)!.callFrame;
      if (/\/(dist|lib)\//.test(f.url) && !f.url.includes('node_modules'))
        out.push(f.functionName || '(anonymous)');
    }
    return out.join(' < ') || '(outside the package)';
  };
  const samples: Sample[] = [];
  let t = profile.startTime;
  for (let i = 0; i < profile.samples.length; i++) {
    t += profile.timeDeltas[i];
    samples.push([t, profile.samples[i], profile.timeDeltas[i + 1] ?? 0]);
  }
  const top = (ss: Sample[], k: number, key: (id: number) => string): string[] => {
    const by = new Map<string, number>();
    for (const [, id, us] of ss) by.set(key(id), (by.get(key(id)) ?? 0) + us);
    return [...by]
      .sort((a, b) => b[1] - a[1])
      .slice(0, k)
      .map(([what, us]) => `    ${(us / 1000).toFixed(1)} ms ${what}`);
  };
  const lines: string[] = [];
  const longest = [...holds].sort((a, b) => b.ms - a.ms).slice(0, count);
  for (const h of longest.sort((a, b) => a.at - b.at)) {
    const from = startUs + h.at * 1000;
    const to = from + (h.ms + 5) * 1000;
    const inside = samples.filter(([at]) => at >= from && at <= to);
    lines.push(`hold ${h.ms.toFixed(0)} ms at ${(h.at / 1000).toFixed(2)} s (${h.where.slice(0, 60)}):`);
    lines.push('  self:', ...top(inside, 6, (id) => name(nodes.get(id)!)));
    lines.push('  package frames:', ...top(inside, 4, ours));
  }
  // Every hold together: with node-vmm's --hold-ms 7, what makes the delay's p99.
  const spans = holds
    .map((h) => [startUs + h.at * 1000, startUs + (h.at + h.ms + 5) * 1000] as const)
    .sort((a, b) => a[0] - b[0]);
  const inAny: Sample[] = [];
  let k = 0;
  for (const smp of samples) {
    while (k < spans.length && spans[k][1] < smp[0]) k++;
    if (k < spans.length && spans[k][0] <= smp[0]) inAny.push(smp);
  }
  lines.push(`all ${holds.length} holds, self:`, ...top(inAny, 20, (id) => name(nodes.get(id)!)));
  lines.push(`all ${holds.length} holds, package frames:`, ...top(inAny, 12, ours));
  lines.push('whole run, self:', ...top(samples, 20, (id) => name(nodes.get(id)!)));
  return lines;
}

if (require.main === module) {
  const [profilePath, holdsPath, n] = process.argv.slice(2);
  if (!profilePath || !holdsPath) {
    console.error('usage: hold-profile.ts PROFILE.cpuprofile HOLDS.json [N]');
    process.exit(2);
  }
  const profile = JSON.parse(fs.readFileSync(profilePath, 'utf8')) as Profile;
  const { startUs, holds } = JSON.parse(fs.readFileSync(holdsPath, 'utf8')) as {
    startUs: number;
    holds: LoopHold[];
  };
  for (const line of describeHolds(profile, startUs, holds, Number(n ?? 25))) console.log(line);
}
