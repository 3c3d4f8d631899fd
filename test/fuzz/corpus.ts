/**
 * The corpus of found crashers (test/fuzz/corpus/<reader>/<name>), replayed on every `npm test`.
 * Each input has a `<name>.json` note beside it: the outcome it must have now (`expect`: `ok`,
 * `cancelled` or an error CODE), the reader options of the case (`opts`, tables only), for a bug
 * of speed the time it must take less than (`maxMs`), where it was found, what went wrong and what
 * fixed it. A large input may be kept compressed, as `<name>.br` (brotli).
 */
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { READERS, type CaseSpec, type Reader } from './cases';
import type { TableCaseOptions } from './tables';

export interface CorpusEntry {
  reader: Reader;
  name: string;
  path: string;
  expect: string;
  maxMs?: number;
  spec: CaseSpec;
  found: string;
  symptom: string;
  fix: string;
}

export const CORPUS_DIR = join(__dirname, 'corpus');

export function corpus(): CorpusEntry[] {
  const out: CorpusEntry[] = [];
  for (const reader of READERS) {
    const dir = join(CORPUS_DIR, reader);
    if (!existsSync(dir)) continue;
    for (const f of readdirSync(dir).sort()) {
      if (f.endsWith('.json') || f.endsWith('.md')) continue;
      const notePath = join(dir, f + '.json');
      if (!existsSync(notePath)) throw new Error(`corpus entry ${reader}/${f} has no ${f}.json note`);
      const note = JSON.parse(readFileSync(notePath, 'utf8')) as {
        expect: string;
        maxMs?: number;
        opts?: TableCaseOptions;
        ext?: string;
        found: string;
        symptom: string;
        fix: string;
      };
      const path = join(dir, f);
      out.push({
        reader,
        name: f,
        path,
        expect: note.expect,
        maxMs: note.maxMs,
        found: note.found,
        symptom: note.symptom,
        fix: note.fix,
        spec: { kind: 'file', reader, path, name: `corpus/${reader}/${f}`, ext: note.ext, opts: note.opts },
      });
    }
  }
  return out;
}
