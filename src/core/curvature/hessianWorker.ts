/** Worker thread of HessianFeeder (feeder.ts): sums the explicit Hessian over the rows it is sent. */
import { parentPort, workerData } from 'node:worker_threads';
import type { HeadShape } from '../task/head';
import { probabilities } from '../task/loss';
import { HessianSum } from './hessian';
import type { FromHessianWorker, ToHessianWorker } from './hessianProtocol';

const port = parentPort!;
const shape = workerData as HeadShape;
const post = (m: FromHessianWorker, transfer: ArrayBuffer[] = []) => port.postMessage(m, transfer);

// One core: the main thread keeps the other (parsing during the pass, summing its share after it).
let chain: Promise<HessianSum> = HessianSum.create(shape, 1);
let p = new Float64Array(0);

port.on('message', (m: ToHessianWorker) => {
  chain = chain.then(async (sum) => {
    if (m.type === 'rows') {
      if (p.length < m.k * shape.C) p = new Float64Array(m.k * shape.C);
      await sum.add(m.h, probabilities(m.g, m.labels, m.k, shape.C, p), m.k);
      post({ type: 'summed', rows: sum.rows });
    } else {
      await sum.release();
      const partial = sum.partial();
      post({ type: 'done', partial }, [...partial.blocks, partial.asum].map((a) => a.buffer) as ArrayBuffer[]);
    }
    return sum;
  });
  chain.catch((e: unknown) => post({ type: 'error', message: e instanceof Error ? e.message : String(e) }));
});
