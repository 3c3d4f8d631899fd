/**
 * A fuzz run: `count` generated cases per reader from one seed, through a Pool; counts per
 * outcome, wall time per reader, the slowest cases, and every bad case (confirmed alone).
 * Shared by `npm run fuzz` (main.ts) and the short run in `npm test` (test/unit/fuzz.test.ts).
 */
import { specName, type CaseSpec, type Reader } from './cases';
import { briefly, confirm, isBad, Pool, resultClass, type CaseResult, type Result } from './harness';

export interface ReaderStats {
  reader: Reader;
  cases: number;
  seconds: number;
  counts: Map<string, number>;
  slowest: { ms: number; name: string }[];
  bad: { spec: CaseSpec; result: Result; alone: Result | null }[];
}

export interface CampaignOptions {
  seed: number;
  count: number;
  readers: readonly Reader[];
  /** Index of the first case (to continue a run). */
  from?: number;
  workers?: number;
  timeLimitMs?: number;
  /** Re-run hangs and crashes alone. Default true. */
  confirm?: boolean;
  log?: (line: string) => void;
}

export async function campaign(o: CampaignOptions): Promise<ReaderStats[]> {
  const timeLimitMs = o.timeLimitMs ?? 15000;
  const pool = new Pool({ workers: o.workers, timeLimitMs });
  const stats: ReaderStats[] = [];
  try {
    for (const reader of o.readers) {
      const from = o.from ?? 0;
      const specs: CaseSpec[] = Array.from({ length: o.count }, (_, k) => ({
        kind: 'gen',
        reader,
        seed: o.seed,
        index: from + k,
      }));
      const t0 = performance.now();
      const step = Math.max(1, Math.floor(o.count / 10));
      const results = await pool.runAll(specs, (r, done) => {
        if (isBad(r.result)) o.log?.(`  ${specName(r.spec)}: ${briefly(r.result)}`);
        if (done % step === 0)
          o.log?.(`  ${reader}: ${done}/${o.count} (${((performance.now() - t0) / 1000).toFixed(1)} s)`);
      });
      const seconds = (performance.now() - t0) / 1000;
      stats.push(await summarize(reader, results, seconds, o.confirm ?? true, timeLimitMs));
    }
  } finally {
    pool.close();
  }
  return stats;
}

async function summarize(
  reader: Reader,
  results: CaseResult[],
  seconds: number,
  again: boolean,
  timeLimitMs: number,
): Promise<ReaderStats> {
  const counts = new Map<string, number>();
  for (const r of results) counts.set(resultClass(r.result), (counts.get(resultClass(r.result)) ?? 0) + 1);
  const slowest = results
    .filter((r) => !isBad(r.result))
    .sort((a, b) => b.ms - a.ms)
    .slice(0, 3)
    .map((r) => ({ ms: r.ms, name: specName(r.spec) }));
  const bad: ReaderStats['bad'] = [];
  for (const r of results.filter((x) => isBad(x.result))) {
    const alone =
      again && (r.result.status === 'hang' || r.result.status === 'crash') ? await confirm(r.spec, timeLimitMs) : null;
    bad.push({ spec: r.spec, result: r.result, alone });
  }
  return {
    reader,
    cases: results.length,
    seconds,
    counts: new Map([...counts].sort((a, b) => b[1] - a[1])),
    slowest,
    bad,
  };
}

/** The counts as a small table. */
export function report(stats: ReaderStats[]): string {
  const lines: string[] = [];
  for (const s of stats) {
    const bad = s.bad.length;
    lines.push(`${s.reader}: ${s.cases} cases in ${s.seconds.toFixed(1)} s, ${bad} bad`);
    const groups = new Map<string, number>();
    for (const [k, v] of s.counts) {
      const g = k.startsWith('error[') ? 'error' : k;
      groups.set(g, (groups.get(g) ?? 0) + v);
    }
    lines.push('  ' + [...groups].map(([k, v]) => `${k} ${v}`).join(', '));
    lines.push(
      '  ' +
        [...s.counts]
          .filter(([k]) => k.startsWith('error['))
          .map(([k, v]) => `${k.slice(6, -1)} ${v}`)
          .join(', '),
    );
    for (const x of s.slowest) lines.push(`  slow: ${x.ms.toFixed(0)} ms ${x.name}`);
    for (const b of s.bad)
      lines.push(`  BAD ${specName(b.spec)}: ${briefly(b.result)}${b.alone ? ` (alone: ${b.alone.status})` : ''}`);
  }
  return lines.join('\n');
}
