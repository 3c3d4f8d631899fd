/**
 * The image bench's floor: list the image folder, decode and preprocess every image with the same
 * decoding threads, and run the unmodified model over them, nothing else.
 */
import * as ort from 'onnxruntime-node';
import { join } from 'node:path';
import { listImageFolder } from '../../src/core/data/images/folder';
import { imagePool } from '../../src/core/data/images/pool';
import { resolvePipeline } from '../../src/core/data/images/preprocess';

async function main(): Promise<void> {
  const [model, dir] = process.argv.slice(2);
  const session = await ort.InferenceSession.create(model);
  const listing = listImageFolder(dir, {});
  const { pipeline } = resolvePipeline({ path: model, inputDims: [3, 32, 32], F: 3 * 32 * 32, float64: false, metadata: undefined });
  const tasks = listing.files.map((f) => ({ path: join(dir, f) }));
  const F = pipeline.features;
  const batch = new Float32Array(512 * F);
  let k = 0;
  let rows = 0;
  const run = async () => {
    if (k === 0) return;
    await session.run({ [session.inputNames[0]]: new ort.Tensor('float32', batch.subarray(0, k * F), [k, 3, 32, 32]) });
    rows += k;
    k = 0;
  };
  for await (const chunk of imagePool().load(tasks, pipeline)) {
    for (let i = 0; i < chunk.count; i++) {
      batch.set(chunk.features.subarray(i * F, (i + 1) * F), k * F);
      if (++k === 512) await run();
    }
  }
  await run();
  process.stdout.write(`${rows}\n`);
  process.exit(0);
}

void main();
