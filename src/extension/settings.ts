/** The extension's settings, typed and validated. Pure: the vscode side passes a getter. */

export interface Settings {
  /** A positive number, or a rule: auto, trace or implied (README, damping). */
  damping: number | 'auto' | 'trace' | 'implied';
  /** The head scored: as shipped, or refit to the optimum of the damped objective. */
  head: 'shipped' | 'refit';
  topK: number;
  /** 'auto', 'none' or 'HxW'. */
  imageShape: string;
  /** null: no cache; '': the default location. */
  cacheDirectory: string | null;
  batchSize: number;
  memorizationTau: number;
  /** A manifest's path column or a Parquet/Arrow image column ('' = the usual names). */
  imageColumn?: string;
  /** Image preprocessing (the model's metadata and a preprocess.json beside it come first). */
  preprocess?: Record<string, unknown>;
}

export const DEFAULTS: Settings = {
  damping: 'auto',
  head: 'shipped',
  topK: 10,
  imageShape: 'auto',
  cacheDirectory: '',
  batchSize: 4096,
  memorizationTau: 0,
};

/** Reads settings through `get`, replacing invalid values by defaults and reporting each. */
export function readSettings(get: (key: string) => unknown): { settings: Settings; problems: string[] } {
  const problems: string[] = [];
  const bad = (key: string, value: unknown, why: string) =>
    problems.push(`influenceLens.${key}: ${JSON.stringify(value)} ${why}; using the default`);

  let damping: Settings['damping'] = DEFAULTS.damping;
  const d = get('damping');
  if (d === 'trace' || d === 'implied') damping = d;
  else if (d !== undefined && d !== null && d !== '' && d !== 'auto') {
    const x = typeof d === 'number' ? d : Number(String(d).trim());
    if (x > 0 && Number.isFinite(x)) damping = x;
    else bad('damping', d, "is not a positive number or 'auto', 'trace' or 'implied'");
  }

  let head = DEFAULTS.head;
  const hd = get('head');
  if (hd === 'shipped' || hd === 'refit') head = hd;
  else if (hd !== undefined && hd !== null) bad('head', hd, "is not 'shipped' or 'refit'");

  const int = (key: keyof Settings, min: number, max: number): number => {
    const v = get(key);
    if (v === undefined || v === null) return DEFAULTS[key] as number;
    if (typeof v === 'number' && Number.isInteger(v) && v >= min && v <= max) return v;
    bad(key, v, `is not an integer in [${min}, ${max}]`);
    return DEFAULTS[key] as number;
  };

  let imageShape = DEFAULTS.imageShape;
  const s = get('imageShape');
  if (typeof s === 'string' && /^(auto|none|\d+\s*[x×]\s*\d+)$/i.test(s.trim())) imageShape = s.trim().toLowerCase();
  else if (s !== undefined && s !== null) bad('imageShape', s, "is not 'auto', 'none' or HxW (e.g. 28x28)");

  let cacheDirectory: string | null = DEFAULTS.cacheDirectory;
  if (get('cache.enabled') === false) cacheDirectory = null;
  else {
    const c = get('cache.directory');
    if (typeof c === 'string') cacheDirectory = c.trim();
    else if (c !== undefined && c !== null) bad('cache.directory', c, 'is not a path');
  }

  let memorizationTau = DEFAULTS.memorizationTau;
  const t = get('memorizationTau');
  if (typeof t === 'number' && t >= 0 && Number.isFinite(t)) memorizationTau = t;
  else if (t !== undefined && t !== null) bad('memorizationTau', t, 'is not a number ≥ 0');

  const images: Pick<Settings, 'imageColumn' | 'preprocess'> = {};
  const ic = get('imageColumn');
  if (typeof ic === 'string' && ic.trim() !== '') images.imageColumn = ic.trim();
  else if (ic !== undefined && ic !== null && ic !== '') bad('imageColumn', ic, 'is not a column name');
  const pre = get('preprocess');
  if (pre && typeof pre === 'object' && !Array.isArray(pre) && Object.keys(pre).length)
    images.preprocess = pre as Record<string, unknown>;
  else if (pre !== undefined && pre !== null && (typeof pre !== 'object' || Array.isArray(pre)))
    bad('preprocess', pre, 'is not an object');

  return {
    settings: {
      damping,
      head,
      topK: int('topK', 1, 200),
      imageShape,
      cacheDirectory,
      batchSize: int('batchSize', 1, 1 << 20),
      memorizationTau,
      ...images,
    },
    problems,
  };
}
