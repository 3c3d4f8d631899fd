/**
 * `node --import tsx scripts/lds-report.ts [mlp|cnn]`: the README's table of how each option
 * predicts retraining on the Adam-trained fixtures (test/fixtures/lds): LDS, and the memorized
 * flags' precision and recall against Feldman–Zhang memorization (mem > 0.25). Takes minutes.
 */
import {
  gradientDotLossChanges,
  lds,
  LDS_MODELS,
  memorization,
  optionLossChanges,
  optionMemorized,
  randomLossChanges,
  setup,
  type LdsModel,
  type Option,
} from '../test/helpers/lds';

const OPTIONS: [string, Option][] = [
  ['trace rule, shipped head (old default)', { damping: 'trace', head: 'shipped' }],
  ['implied L2, shipped head', { damping: 'implied', head: 'shipped' }],
  ['implied L2, refit head', { damping: 'implied', head: 'refit' }],
  ['λ = 1e-4, shipped head', { damping: 1e-4, head: 'shipped' }],
  ['λ = 1e-3, shipped head', { damping: 1e-3, head: 'shipped' }],
  ['λ = 1e-2, shipped head', { damping: 1e-2, head: 'shipped' }],
  ['λ = 1e-1, shipped head', { damping: 1e-1, head: 'shipped' }],
  ['λ = 1e-3, refit head', { damping: 1e-3, head: 'refit' }],
  ['trace rule, refit head', { damping: 'trace', head: 'refit' }],
];

async function main(): Promise<void> {
  const models = (process.argv.slice(2) as LdsModel[]).filter((m) => LDS_MODELS.includes(m));
  console.log('| model | option | λ | LDS | mem precision | mem recall | flagged |');
  console.log('|---|---|---|---|---|---|---|');
  for (const model of models.length ? models : LDS_MODELS) {
    const s = await setup(model);
    const row = (name: string, damping: string, l: number, m: ReturnType<typeof memorization> | null) =>
      console.log(
        `| ${model} | ${name} | ${damping} | ${l.toFixed(3)} | ${m ? m.precision.toFixed(2) : '–'} | ${m ? m.recall.toFixed(2) : '–'} | ${m ? m.flagged : '–'} |`,
      );
    for (const [name, o] of OPTIONS) {
      const { lossChange, damping } = await optionLossChanges(s, o);
      row(name, damping.toPrecision(3), lds(s.truth, lossChange), memorization(s.truth, await optionMemorized(s, o)));
    }
    row('gradient dot product', '–', lds(s.truth, gradientDotLossChanges(s)), null);
    row('random', '–', lds(s.truth, randomLossChanges(s, 1)), null);
    await s.engine.release();
  }
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
