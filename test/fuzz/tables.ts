/**
 * Generated data files for the table readers: a plausible CSV, TSV or JSONL document (varied
 * headers, numbers, labels, quoting, line ends, BOM, blank lines), then zero or more kinds of damage
 * (truncation, stray quotes, NUL bytes, huge fields, invalid UTF-8, mixed line ends, very wide
 * headers, deep JSON nesting, bit flips...), and reader options (tiny chunk sizes that split records
 * across reads, batch sizes, label and feature choices, classes, an abort after some reads).
 */
import type { TableFormat } from '../../src/core/data/table';
import { Rng } from './prng';

/** The options of a table case: TableOptions that can be sent between processes, and a cancel point. */
export interface TableCaseOptions {
  labelColumn?: string;
  features?: string[];
  classes?: string[];
  numClasses?: number;
  requireLabel?: boolean;
  batchSize?: number;
  chunkSize?: number;
  format?: TableFormat;
  float64?: boolean;
  /** Abort the read after this many progress callbacks. */
  cancelAfter?: number;
}

export interface TableCase {
  reader: 'csv' | 'jsonl';
  /** What was generated and done to it, for the report. */
  name: string;
  /** File name extension, with the dot. */
  ext: string;
  bytes: Buffer;
  opts: TableCaseOptions;
}

const NAMES = [
  'label',
  'x0',
  'x1',
  'x2',
  'pixel 3',
  'feature,4',
  'a"b',
  'ünïcödé',
  '日本',
  '',
  ' label',
  'label ',
  'id',
  'target',
  'y',
  '\t',
  '0',
  'LABEL',
  '__proto__',
  'constructor',
];
const CLASS_NAMES = ['cat', 'dog', 'bird', 'Cat', ' dog ', '', '0', '1'];

const GOOD_NUMBERS = [
  '0',
  '1',
  '-1',
  '0.5',
  '-2.25',
  '.5',
  '5.',
  '1e3',
  '1E-7',
  '+2',
  ' 4 ',
  '\t7\t',
  '3.4028234e38',
  '1e-45',
  '123456789012345678',
  '0.1234567890123456789',
  '-0',
  '00012',
  '1e+22',
  '9.999999999999999e22',
];
const BAD_NUMBERS = [
  '',
  'nan',
  'NaN',
  'inf',
  '-Infinity',
  '+inf',
  '1e400',
  '3.5e38',
  '-1e39',
  '0x10',
  '1_000',
  '١٢',
  'abc',
  '1e',
  '1e+',
  '.',
  '-',
  '+',
  '1.2.3',
  '--1',
  '1 2',
  '∞',
  '1e99999999999',
  '0.0.',
  'e5',
  '\u00a01',
];
const GOOD_LABELS = ['0', '1', '2', '1.0', ' 2 ', '2.000', '+1', '0e0'];
const BAD_LABELS = [
  '',
  '-1',
  '3',
  '99',
  '4294967296',
  '99999999999999999999',
  '1.5',
  'cat',
  'dog',
  ' bird ',
  'nan',
  'x',
  '-0',
  '1e309',
  '2147483647',
  '2147483648',
  '1e9',
];
const BAD_UTF8 = [
  [0xff],
  [0xfe],
  [0xc3],
  [0xe2, 0x82],
  [0xed, 0xa0, 0x80],
  [0xc0, 0xaf],
  [0xf4, 0x90, 0x80, 0x80],
  [0x80],
  [0xf0, 0x9f, 0x98],
];
const SPECIAL_BYTES = [
  0x2c, 0x09, 0x22, 0x0a, 0x0d, 0x00, 0x20, 0x7b, 0x7d, 0x5b, 0x5d, 0x3a, 0x5c, 0x30, 0x39, 0x2d, 0x2e, 0x65, 0xef,
  0xbb, 0xbf, 0xff,
];

/** How often a value is not a valid one: most documents have none. */
function badRate(r: Rng): number {
  return r.weighted([
    [6, 0],
    [3, 0.01],
    [1, 0.1],
  ] as const);
}

function numberText(r: Rng, bad: number): string {
  if (!r.chance(bad)) {
    if (r.chance(0.6)) return String(+(r.float() * 20 - 10).toFixed(r.int(6)));
    return r.pick(GOOD_NUMBERS);
  }
  return r.pick(BAD_NUMBERS);
}

function labelText(r: Rng, classes: number, bad: number): string {
  if (!r.chance(bad)) return r.chance(0.7) ? String(r.int(classes)) : r.pick(GOOD_LABELS);
  return r.pick(BAD_LABELS);
}

function lineEnd(r: Rng, style: string): string {
  if (style === 'mixed') return r.pick(['\n', '\r\n', '\r']);
  return style;
}

/** A CSV field as written: quoted (with doubled inner quotes) when it needs it or by chance. */
function csvField(r: Rng, text: string, sep: string): string {
  const needs = text.includes(sep) || text.includes('"') || text.includes('\n') || text.includes('\r');
  if (needs || r.chance(0.08)) return '"' + text.replace(/"/g, '""') + '"';
  return text;
}

function headerNames(r: Rng, n: number): string[] {
  const names: string[] = [];
  const labelAt = r.chance(0.95) ? r.int(n) : -1;
  const odd = r.chance(0.2);
  for (let k = 0; k < n; k++) {
    if (k === labelAt) names.push('label');
    else if (!odd || r.chance(0.7)) names.push(`x${k}`);
    else names.push(r.pick(NAMES));
  }
  return names;
}

function csvDocument(r: Rng, sep: ',' | '\t'): { text: string; names: string[]; what: string } {
  const wide = r.chance(0.02);
  const cols = wide ? r.pick([1000, 20000, 100000]) : r.range(1, 9);
  const rows = wide ? r.range(0, 3) : r.chance(0.1) ? 0 : r.range(1, 40);
  const bad = badRate(r);
  const names = wide ? Array.from({ length: cols }, (_, k) => (k === 0 ? 'label' : `c${k}`)) : headerNames(r, cols);
  const classes = r.range(1, 4);
  const style = r.weighted([
    [5, '\n'],
    [2, '\r\n'],
    [1, '\r'],
    [2, 'mixed'],
  ] as const);
  const parts: string[] = [];
  if (r.chance(0.1)) parts.push('\ufeff');
  if (r.chance(0.05)) parts.push(lineEnd(r, style));
  parts.push(names.map((n) => csvField(r, n, sep)).join(sep), lineEnd(r, style));
  const labelCol = names.indexOf('label');
  for (let i = 0; i < rows; i++) {
    const fields: string[] = [];
    for (let k = 0; k < cols; k++) {
      if (wide) fields.push(k === 0 ? '1' : String(k % 10));
      else fields.push(csvField(r, k === labelCol ? labelText(r, classes, bad) : numberText(r, bad), sep));
    }
    if (!wide && r.chance(bad / 2)) fields.push('1'); // ragged
    if (!wide && r.chance(bad / 2) && fields.length > 1) fields.pop();
    parts.push(fields.join(sep));
    if (i < rows - 1 || r.chance(0.8)) parts.push(lineEnd(r, style));
    if (r.chance(0.04)) parts.push(r.pick(['\n', '  \n', '\t\r\n', '\r']));
  }
  return {
    text: parts.join(''),
    names,
    what: `${sep === ',' ? 'csv' : 'tsv'} ${cols}x${rows} ${JSON.stringify(style)}`,
  };
}

function nestedArray(r: Rng, width: number, depth: number): unknown {
  const flat = Array.from({ length: width }, () => +(r.float() * 4 - 2).toFixed(3));
  if (depth <= 1 || width < 2) return flat;
  const half = Math.floor(width / 2);
  return [nestedArray(r, half, depth - 1), nestedArray(r, width - half, depth - 1)];
}

/** Objects of very many keys (the JSONL form of a very wide header). */
function wideJsonl(r: Rng): { text: string; names: string[]; what: string } {
  const keys = r.pick([1000, 20000, 100000]);
  const rows = r.range(1, 3);
  const names = Array.from({ length: keys }, (_, k) => (k === 0 ? 'label' : `k${k}`));
  const lines: string[] = [];
  for (let i = 0; i < rows; i++)
    lines.push('{' + names.map((n, k) => `"${n}":${k === 0 ? 1 : (k + i) % 10}`).join(',') + '}');
  return { text: lines.join('\n') + '\n', names, what: `jsonl ${keys}keys x${rows}` };
}

function jsonlDocument(r: Rng): { text: string; names: string[]; what: string } {
  if (r.chance(0.02)) return wideJsonl(r);
  const keys = r.range(1, 6);
  const rows = r.chance(0.1) ? 0 : r.range(1, 40);
  const bad = badRate(r);
  const names = headerNames(r, keys);
  const shapes = names.map(() =>
    r.weighted([
      [6, 0],
      [2, 1],
      [1, 2],
      [1, 3],
    ] as const),
  );
  const widths = names.map(() => r.range(1, 5));
  const classes = r.range(1, 4);
  const style = r.weighted([
    [6, '\n'],
    [2, '\r\n'],
    [1, '\r'],
    [1, 'mixed'],
  ] as const);
  const parts: string[] = [];
  if (r.chance(0.1)) parts.push('\ufeff');
  for (let i = 0; i < rows; i++) {
    const obj: Record<string, unknown> = {};
    names.forEach((name, k) => {
      if (name === 'label') {
        const t = labelText(r, classes, bad);
        obj[name] = r.chance(bad)
          ? r.pick([null, true, [1], { a: 1 }, 'cat', 1.5])
          : r.chance(0.7) && t.trim() !== '' && !Number.isNaN(Number(t))
            ? Number(t)
            : t;
        return;
      }
      const shape = shapes[k];
      if (shape === 0)
        obj[name] = !r.chance(bad)
          ? +(r.float() * 10 - 5).toFixed(r.int(5))
          : r.pick([null, 'x', '1.5', true, {}, [], 1e308]);
      else if (shape === 1)
        obj[name] = Array.from({ length: !r.chance(bad) ? widths[k] : r.int(6) }, () =>
          !r.chance(bad) ? +(r.float() * 2).toFixed(2) : r.pick(['2', 'nan', null, [1, 2]]),
        );
      else if (shape === 2) obj[name] = nestedArray(r, widths[k] + 1, 3);
      else obj[name] = String(+(r.float() * 3).toFixed(2));
    });
    let line = JSON.stringify(obj);
    if (r.chance(0.05)) line = '  ' + line + ' ';
    if (r.chance(bad / 2)) line = r.pick(['[1,2]', '42', 'null', '"text"', '{}', '{"label":1}']);
    parts.push(line);
    if (i < rows - 1 || r.chance(0.8)) parts.push(lineEnd(r, style));
    if (r.chance(0.04)) parts.push(r.pick(['\n', '  \n', '\t\r\n']));
  }
  return { text: parts.join(''), names, what: `jsonl ${keys}keys x${rows} ${JSON.stringify(style)}` };
}

// ---------------------------------------------------------------------------------------
// Damage

type Mutator = (r: Rng, b: Buffer, jsonl: boolean) => [Buffer, string];

const at = (r: Rng, b: Buffer) => r.int(b.length + 1);
const splice = (b: Buffer, pos: number, del: number, ins: Buffer | string) =>
  Buffer.concat([b.subarray(0, pos), Buffer.from(ins as string), b.subarray(Math.min(b.length, pos + del))]);

const MUTATORS: readonly (readonly [number, Mutator])[] = [
  [
    6,
    (r, b) => {
      const p = at(r, b);
      return [b.subarray(0, p), `truncate@${p}`];
    },
  ],
  [
    6,
    (r, b) => {
      const p = at(r, b);
      return [splice(b, p, 0, r.pick(['"', '""', '"""', '"a', 'a"', '",'])), `quote@${p}`];
    },
  ],
  [
    4,
    (r, b) => {
      const p = at(r, b);
      const n = r.pick([1, 1, 2, 16, 1000]);
      return [splice(b, p, r.chance(0.5) ? n : 0, Buffer.alloc(n)), `nul${n}@${p}`];
    },
  ],
  [
    2,
    (r, b, jsonl) => {
      const n = r.weighted([
        [6, r.range(1000, 100000)],
        [2, r.range(100000, 1 << 20)],
        [1, r.range(1 << 20, 3 << 20)],
      ] as const);
      const kind = r.pick(['digits', 'letters', 'quoted', 'spaces', 'newlines', 'separators']);
      let fill: string;
      if (kind === 'digits') fill = '7'.repeat(n);
      else if (kind === 'letters') fill = 'ab'.repeat(n >> 1);
      else if (kind === 'quoted') fill = jsonl ? '"' + 'q'.repeat(n) + '"' : '"' + 'x,\n"" '.repeat(n >> 3) + '"';
      else if (kind === 'spaces') fill = ' '.repeat(n);
      else if (kind === 'newlines') fill = '\n'.repeat(n);
      else fill = (jsonl ? ',' : r.pick([',', '\t'])).repeat(n);
      const p = at(r, b);
      return [splice(b, p, 0, fill), `huge-${kind}${n}@${p}`];
    },
  ],
  [
    5,
    (r, b) => {
      const p = at(r, b);
      const seq = r.pick(BAD_UTF8);
      return [
        splice(b, p, r.chance(0.3) ? 1 : 0, Buffer.from(seq)),
        `utf8[${seq.map((x) => x.toString(16)).join(' ')}]@${p}`,
      ];
    },
  ],
  [
    5,
    (r, b) => {
      // Mixed line ends: change some terminators into another kind.
      const to = r.pick(['\r', '\r\n', '\n', '\n\r', '', '\r\r\n']);
      const p = r.float();
      const s = b.toString('latin1').replace(/\r\n|\r|\n/g, (m) => (r.float() < p ? to : m));
      return [Buffer.from(s, 'latin1'), `eol->${JSON.stringify(to)}@${p.toFixed(2)}`];
    },
  ],
  [
    4,
    (r, b) => {
      const p = at(r, b);
      const n = r.small(Math.max(1, b.length - p));
      return [splice(b, p, n, ''), `delete${n}@${p}`];
    },
  ],
  [
    3,
    (r, b) => {
      const p = at(r, b);
      const n = r.small(Math.max(1, b.length - p));
      const q = at(r, b);
      return [splice(b, q, 0, b.subarray(p, p + n)), `dup${n}@${p}->${q}`];
    },
  ],
  [
    5,
    (r, b) => {
      if (b.length === 0) return [b, 'flip-none'];
      const c = Buffer.from(b);
      const k = r.range(1, 8);
      for (let i = 0; i < k; i++) c[r.int(c.length)] ^= 1 << r.int(8);
      return [c, `bitflip${k}`];
    },
  ],
  [
    6,
    (r, b) => {
      if (b.length === 0) return [Buffer.of(r.pick(SPECIAL_BYTES)), 'special-into-empty'];
      const c = Buffer.from(b);
      const k = r.range(1, 4);
      for (let i = 0; i < k; i++) c[r.int(c.length)] = r.pick(SPECIAL_BYTES);
      return [c, `special${k}`];
    },
  ],
  [
    2,
    (r, b) => {
      const p = at(r, b);
      return [splice(b, p, 0, r.bytes(r.range(1, 64))), `random@${p}`];
    },
  ],
  [
    3,
    (r, b, jsonl) => {
      // A value replaced: a number with something that is not quite one.
      const s = b.toString('latin1');
      const re = jsonl ? /-?\d+(\.\d+)?/g : /[^,\t\r\n"]+/g;
      const hits = [...s.matchAll(re)];
      if (hits.length === 0) return [b, 'value-none'];
      const h = r.pick(hits);
      const v = r.pick(
        jsonl
          ? [
              '1e400',
              '-1e999',
              '1e-400',
              '-0',
              '123456789012345678901234567890',
              '"1"',
              'NaN',
              'Infinity',
              '0x1',
              '.5',
              '01',
              '1.',
              'true',
              'null',
              '[]',
              '{}',
              '"nan"',
            ]
          : [...BAD_NUMBERS, ...BAD_LABELS],
      );
      return [
        Buffer.from(s.slice(0, h.index!) + v + s.slice(h.index! + h[0].length), 'latin1'),
        `value${JSON.stringify(v)}@${h.index}`,
      ];
    },
  ],
  [
    3,
    (r, b, jsonl) => {
      if (!jsonl) {
        // A row with many more fields.
        const n = r.pick([100, 10000, 100000]);
        const p = at(r, b);
        return [splice(b, p, 0, '\n' + '1,'.repeat(n) + '1\n'), `wide-row${n}@${p}`];
      }
      // Deep nesting, balanced or not.
      const depth = r.pick([100, 1000, 10000, 100000, 300000]);
      const balanced = r.chance(0.7);
      const open = r.pick(['[', '{"a":', '[[']);
      const close = open === '[' ? ']' : open === '[[' ? ']]' : '}';
      const v = open.repeat(depth) + '1' + (balanced ? close.repeat(depth) : '');
      const key = r.pick(['x0', 'x1', 'label', 'deep']);
      const line = `{"label":0,"${key}":${v}}`;
      const where = r.int(3);
      const s = b.toString('latin1');
      const firstEnd = s.search(/\r|\n/);
      let out: string;
      if (where === 0 || firstEnd < 0)
        out = line + '\n' + s; // as the first object
      else if (where === 1) out = s.slice(0, firstEnd) + '\n' + line + s.slice(firstEnd);
      else out = s + '\n' + line;
      return [Buffer.from(out, 'latin1'), `deep${open}${depth}${balanced ? '' : '-open'}@${where}`];
    },
  ],
  [
    2,
    (r, b, jsonl) => {
      if (!jsonl) return [splice(b, 0, 0, '\ufeff'.repeat(r.range(1, 3))), 'bom'];
      const v = r.pick([
        '{"label":0,"label":1,"x0":1}',
        '{"__proto__":{"label":1},"x0":1}',
        '{"label":0,"x0":"\\u0000"}',
        '{"label":"\\ud800","x0":1}',
        '{"label":0,"x0":1}{"label":0,"x0":1}',
        '{"label":0,"x0":[1,[2,[3]]]}',
        '{"label":0,"x0":1,}',
        '{label:0}',
        "{'label':0}",
        '{"label":0,"x0":1} // comment',
        '\u2028{"label":0}',
      ]);
      const p = r.chance(0.5) ? 0 : b.length;
      return [splice(b, p, 0, Buffer.from(v + '\n', 'utf8')), `json-odd@${p}`];
    },
  ],
];

function options(r: Rng, names: string[], size: number, jsonl: boolean, ext: string): TableCaseOptions {
  const o: TableCaseOptions = {};
  // Tiny reads split fields and records across chunks; a bound keeps the number of reads of a big file sane.
  const floor = Math.ceil(size / 20000);
  const chunk = r.weighted([
    [2, 1],
    [4, r.range(2, 16)],
    [3, r.range(17, 4096)],
    [3, 0],
  ] as const);
  if (chunk > 0) o.chunkSize = Math.max(chunk, floor);
  else if (floor > 1) o.chunkSize = Math.max(floor, 1 << 16);
  if (r.chance(0.5)) o.batchSize = r.pick([1, 2, 3, 5, 64]);
  if (r.chance(0.15)) o.labelColumn = r.chance(0.7) && names.length > 0 ? r.pick(names) : r.pick(NAMES);
  if (r.chance(0.1)) {
    const label = o.labelColumn ?? 'label';
    const pool = r.chance(0.8) ? names.filter((n) => n !== label) : [...names, 'missing', label];
    const f = pool.filter(() => r.chance(0.6));
    if (r.chance(0.1) && f.length > 0) f.push(f[0]);
    o.features = f;
  }
  if (r.chance(0.1))
    o.classes = r.chance(0.8)
      ? ['cat', 'dog', 'bird'].slice(0, r.range(1, 3))
      : [r.pick(CLASS_NAMES), r.pick(CLASS_NAMES)];
  if (r.chance(0.1)) o.numClasses = r.pick([1, 2, 3, 4, 2147483647]);
  if (r.chance(0.1)) o.requireLabel = false;
  if (r.chance(0.1)) o.float64 = true;
  if (r.chance(0.05)) o.format = r.pick(['csv', 'tsv', 'jsonl'] as const);
  else if (ext !== '.csv' && ext !== '.tsv' && ext !== '.jsonl' && r.chance(0.5)) o.format = jsonl ? 'jsonl' : 'csv';
  if (r.chance(0.04)) o.cancelAfter = r.range(0, 5);
  return o;
}

/** The table case number `index` of a run with this case seed. */
export function tableCase(reader: 'csv' | 'jsonl', seed: number): TableCase {
  const r = new Rng(seed);
  const jsonl = reader === 'jsonl';
  const sep = !jsonl && r.chance(0.3) ? '\t' : ',';
  const doc = jsonl ? jsonlDocument(r) : csvDocument(r, sep);
  let bytes: Buffer = Buffer.from(doc.text, 'utf8');
  const steps: string[] = [doc.what];
  const damage = r.weighted([
    [5, 0],
    [5, 1],
    [3, 2],
    [1, r.range(3, 6)],
  ] as const);
  for (let k = 0; k < damage; k++) {
    const m = r.weighted(MUTATORS);
    const [next, what] = m(r, bytes, jsonl);
    bytes = next;
    steps.push(what);
  }
  const extChoice = r.weighted([
    [20, jsonl ? '.jsonl' : sep === ',' ? '.csv' : '.tsv'],
    [1, jsonl ? '.ndjson' : sep === ',' ? '.CSV' : '.tab'],
    [1, r.pick(['.txt', '', '.json', '.csv.gz'])],
  ] as const);
  return {
    reader,
    name: steps.join(' + '),
    ext: extChoice,
    bytes,
    opts: options(r, doc.names, bytes.length, jsonl, extChoice),
  };
}
