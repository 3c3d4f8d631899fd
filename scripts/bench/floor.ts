/** The bench's floor: parse the CSV and run the unmodified model over every row, nothing else. */
import * as ort from 'onnxruntime-node';
import { TableReader } from '../../src/core';

async function main(): Promise<void> {
  const [model, data] = process.argv.slice(2);
  const session = await ort.InferenceSession.create(model);
  const reader = await TableReader.open(data, {});
  const F = reader.info.featureCount;
  let pending: Promise<unknown> | null = null;
  let rows = 0;
  for await (const b of reader.batches()) {
    if (pending) await pending;
    pending = session.run({ [session.inputNames[0]]: new ort.Tensor('float32', b.features.subarray(0, b.count * F), [b.count, F]) });
    rows += b.count;
  }
  await pending;
  process.stdout.write(`${rows}\n`);
}

void main();
