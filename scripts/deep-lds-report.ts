/**
 * `node --import tsx scripts/deep-lds-report.ts [mlp|cnn]`: the README's table of influence beyond
 * the head on the Adam-trained fixtures (test/fixtures/lds): LDS against retraining of EK-FAC per
 * layer over the last 2 layers and over all of them, beside the exact-GGN LDS of the references
 * (test/fixtures/deep), our exact GGN where it is affordable (≤ 5,000 parameters), and the Pearson
 * correlation of EK-FAC's lossChangeIfRemoved with the exact GGN's (mean and smallest over the 40
 * test rows). Takes a few minutes.
 */
import { ExactGgn } from '../src/core/curvature/ggn';
import { LayerEkfac } from '../src/core/curvature/layerEkfac';
import { readDeepRows } from '../src/core/deepRows';
import { DeepEngine } from '../src/core/model/deep';
import { Engine } from '../src/core/model/engine';
import { decode, ldsReference, lossChangesAt, testPoints } from '../test/helpers/deep';
import { lds, LDS_MODELS, loadTruth, type LdsModel } from '../test/helpers/lds';
import { pearson } from '../test/helpers/stats';

const LAMBDAS = [1e-4, 1e-3, 1e-2, 1e-1];

async function main(): Promise<void> {
  const models = (process.argv.slice(2) as LdsModel[]).filter((m) => LDS_MODELS.includes(m));
  console.log(
    '| model | scope | params | method | λ 1e-4 | λ 1e-3 | λ 1e-2 | λ 1e-1 | Pearson with exact GGN, λ 1e-3 / 1e-2 (mean, min over test rows) |',
  );
  console.log('|---|---|---|---|---|---|---|---|---|');
  for (const model of models.length ? models : LDS_MODELS) {
    const truth = loadTruth(model);
    for (const scope of ['last2', 'all'] as const) {
      const ref = ldsReference(model, scope);
      const eng = await Engine.open(ref.model);
      const deep = await DeepEngine.open(eng, scope === 'all' ? 'all' : 2);
      const exact = deep.P <= 5000;
      const col = LayerEkfac.collector(deep);
      const rows = await readDeepRows(deep, ref.train, {}, {}, { ggn: exact, onBatch: col.onBatch });
      const points = await testPoints(deep, ref.test, ref.testRows);
      const blocks = await col.finish((fn) => deep.pass(ref.train, {}, {}, fn));
      const ek = LayerEkfac.create(blocks, deep.P, rows.n, LAMBDAS[0]);
      const byLambda = await lossChangesAt(deep, rows, ref.train, points, ek, LAMBDAS);
      const cells: string[] = [];
      const ours: string[] = [];
      const corr: string[] = [];
      for (const [j, lambda] of LAMBDAS.entries()) {
        const lc = byLambda[j];
        cells.push(lds(truth, lc).toFixed(4));
        if (exact) {
          const x = await ExactGgn.create(rows.H0!, deep.P, lambda);
          ours.push(lds(truth, (await lossChangesAt(deep, rows, ref.train, points, x, [lambda]))[0]).toFixed(4));
          await x.release();
        }
        const stored = ref.lossChangeIfRemoved[String(lambda)];
        if (stored) {
          const R = decode(stored);
          const p = lc.map((v, t) => pearson(v, R.subarray(t * rows.n, (t + 1) * rows.n)));
          corr.push(`${(p.reduce((a, b) => a + b, 0) / p.length).toFixed(3)}, ${Math.min(...p).toFixed(3)}`);
        }
      }
      await ek.release();
      const head = `| ${model} | ${scope === 'all' ? 'all layers' : 'last 2 layers'} | ${deep.P}`;
      console.log(`${head} | EK-FAC per layer | ${cells.join(' | ')} | ${corr.join(' / ')} |`);
      if (exact) console.log(`${head} | exact GGN (ours, onnxruntime masks) | ${ours.join(' | ')} | |`);
      console.log(
        `${head} | exact GGN (reference, float64 masks) | ${LAMBDAS.map((l) => ref.lds.lambdas[String(l)].toFixed(4)).join(' | ')} | |`,
      );
      await deep.release();
      await eng.release();
    }
  }
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
