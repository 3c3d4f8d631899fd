/** Deterministic streams for generated test and bench data. */

/** Uniform samples in (0, 1) from xorshift32, never 0 (so a log of one is finite). */
export function uniform(seed: number): () => number {
  let s = seed >>> 0 || 1;
  return () => {
    s ^= s << 13;
    s ^= s >>> 17;
    s ^= s << 5;
    return ((s >>> 0) + 0.5) / 4294967296;
  };
}

/** Standard normal samples (Box–Muller), two uniforms each, from `u`. */
export function normal(u: () => number): () => number {
  return () => Math.sqrt(-2 * Math.log(u())) * Math.cos(2 * Math.PI * u());
}
