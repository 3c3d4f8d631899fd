/** The channel between HessianFeeder (feeder.ts) and its worker thread (hessianWorker.ts). */

/** To the worker: a batch of rows to add, or the end of the rows. */
export type ToHessianWorker =
  { type: 'rows'; h: Float32Array; g: Float64Array; labels: Int32Array; k: number } | { type: 'finish' };
/** From the worker: rows summed so far, its partial sums at the end, or its failure. */
export type FromHessianWorker =
  { type: 'summed'; rows: number } | { type: 'done'; partial: HessianPartial } | { type: 'error'; message: string };

/** HessianSum's sums before assembly. */
export interface HessianPartial {
  blocks: Float64Array[];
  asum: Float64Array;
  n: number;
}
