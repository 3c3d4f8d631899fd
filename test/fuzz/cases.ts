/**
 * What a case is, as sent to the process that runs it: a generated case (reader, run seed and
 * index, from which tables.ts or models.ts regenerate the same bytes anywhere), a file (a corpus
 * entry, or a candidate while a crasher is minimized), or a self-test of the harness itself.
 */
import { readFileSync } from 'node:fs';
import { extname } from 'node:path';
import { brotliDecompressSync } from 'node:zlib';
import { hashString, mix } from './prng';
import { modelCase } from './models';
import type { FuzzCase } from './run';
import { tableCase, type TableCaseOptions } from './tables';

export type Reader = 'csv' | 'jsonl' | 'onnx';
export const READERS: readonly Reader[] = ['csv', 'jsonl', 'onnx'];

export type CaseSpec =
  | { kind: 'gen'; reader: Reader; seed: number; index: number }
  | { kind: 'file'; reader: Reader; path: string; name: string; ext?: string; opts?: TableCaseOptions }
  /** Misbehaves on purpose, to check that the harness sees it: loops, aborts, throws or exits. */
  | { kind: 'selftest'; what: 'hang' | 'abort' | 'throw' | 'exit' | 'late-throw' | 'ok' };

/** The seed of case `index` of a run: each case is independent of how many others are run. */
export function caseSeed(seed: number, reader: Reader, index: number): number {
  return mix(seed, hashString(reader), index);
}

export function specName(s: CaseSpec): string {
  if (s.kind === 'gen') return `${s.reader} seed ${s.seed} case ${s.index}`;
  if (s.kind === 'file') return `${s.reader} ${s.name}`;
  return `selftest ${s.what}`;
}

export function makeCase(s: Exclude<CaseSpec, { kind: 'selftest' }>): FuzzCase {
  if (s.kind === 'gen') {
    const cs = caseSeed(s.seed, s.reader, s.index);
    return s.reader === 'onnx' ? modelCase(cs) : tableCase(s.reader, cs);
  }
  // Large corpus inputs are kept compressed (name.csv.br): the case is what they decompress to.
  const br = s.path.endsWith('.br');
  const bytes = br ? brotliDecompressSync(readFileSync(s.path)) : readFileSync(s.path);
  if (s.reader === 'onnx') return { reader: 'onnx', name: s.name, ext: '.onnx', bytes };
  return {
    reader: s.reader,
    name: s.name,
    ext: s.ext ?? extname(br ? s.path.slice(0, -3) : s.path),
    bytes,
    opts: s.opts ?? {},
  };
}
