/** A decoding thread of the image pool: loads a chunk of images and returns their features (transferred). */
import { parentPort } from 'node:worker_threads';
import { InfluenceError } from '../../errors';
import { loadImage, type ImageFacts } from './load';
import type { FromImageWorker, ToImageWorker } from './poolProtocol';

parentPort?.on('message', (m: ToImageWorker) => {
  void run(m).then((reply) => {
    if ('features' in reply) parentPort?.postMessage(reply, [reply.features.buffer as ArrayBuffer]);
    else parentPort?.postMessage(reply);
  });
});

async function run(m: ToImageWorker): Promise<FromImageWorker> {
  const F = m.pipeline.features;
  const features = m.pipeline.float64 ? new Float64Array(m.tasks.length * F) : new Float32Array(m.tasks.length * F);
  const facts: ImageFacts[] = [];
  for (let i = 0; i < m.tasks.length; i++) {
    try {
      facts.push(await loadImage(m.tasks[i], m.pipeline, features, i * F));
    } catch (e) {
      if (e instanceof InfluenceError)
        return { id: m.id, error: { index: i, code: e.code, message: e.message, place: { ...e.place } } };
      return { id: m.id, error: { index: i, internal: (e as Error)?.stack ?? String(e) } };
    }
  }
  return { id: m.id, features, facts };
}
