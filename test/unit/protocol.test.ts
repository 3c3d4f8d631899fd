import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import { isRecord, messageGuard, PendingRequests } from '../../src/protocol/message';
import { isHostMessage, isWebviewMessage, type Reason } from '../../src/protocol/webview';
import {
  className,
  describeAgreement,
  describeLayerSet,
  describeLossChange,
  describeReason,
  fmt,
} from '../../src/protocol/words';

describe('message helpers', () => {
  test('isRecord accepts plain objects only', () => {
    assert.equal(isRecord({}), true);
    for (const x of [null, undefined, [], 'x', 1]) assert.equal(isRecord(x), false, String(x));
  });

  test('messageGuard checks the fields of the known types and rejects inherited names', () => {
    const guard = messageGuard<{ type: 'a'; n: number } | { type: 'b' }>({
      a: (m) => typeof m.n === 'number',
      b: () => true,
    });
    assert.equal(guard({ type: 'a', n: 1 }), true);
    assert.equal(guard({ type: 'b' }), true);
    for (const m of [
      { type: 'a' },
      { type: 'c' },
      { type: 'toString' },
      { type: 'constructor' },
      { type: '__proto__' },
      { n: 1 },
      [{ type: 'b' }],
    ]) {
      assert.equal(guard(m), false, JSON.stringify(m));
    }
  });

  test('PendingRequests numbers requests from 1 and settles each by its id, once', async () => {
    const pending = new PendingRequests<string, string>();
    assert.equal(pending.latest, 0);
    const first = pending.open('one');
    const second = pending.open('two');
    assert.deepEqual([first.id, second.id, pending.latest, pending.size], [1, 2, 2, 2]);
    assert.equal(pending.get(2)?.extra, 'two');
    assert.equal(pending.size, 2, 'get leaves the request waiting');
    pending.take(2)?.resolve('done');
    assert.equal(await second.reply, 'done');
    assert.equal(pending.take(2), undefined, 'a settled request is gone');
    assert.equal(pending.take(7), undefined);
    for (const w of pending.takeAll()) w.reject(new Error('gone'));
    await assert.rejects(first.reply, /gone/);
    assert.equal(pending.size, 0);
  });
});

describe('isWebviewMessage', () => {
  test('accepts every well-formed message', () => {
    const valid: unknown[] = [
      { type: 'ready' },
      { type: 'runAudit' },
      { type: 'reveal', file: 'train', row: 0, line: 2 },
      { type: 'reveal', file: 'test', row: 146, line: 148 },
      { type: 'setRanking', ranking: 'influence' },
      { type: 'setRanking', ranking: 'relative' },
      { type: 'setLayers', layers: 'head' },
      { type: 'setLayers', layers: 'last2' },
      { type: 'setLayers', layers: 'all' },
      { type: 'exportCleaned', requestId: 1 },
      { type: 'exportCleaned', requestId: 0 },
    ];
    for (const m of valid) assert.equal(isWebviewMessage(m), true, JSON.stringify(m));
  });

  test('rejects non-objects and unknown types', () => {
    const invalid: unknown[] = [
      null,
      undefined,
      0,
      'ready',
      true,
      [],
      {},
      { type: 'unknown' },
      { type: 'READY' },
      { type: 7 },
      [{ type: 'ready' }],
    ];
    for (const m of invalid) assert.equal(isWebviewMessage(m), false, String(JSON.stringify(m)));
  });

  test('rejects reveals with non-integer rows or lines, or another file', () => {
    const invalid: unknown[] = [
      { type: 'reveal', file: 'train', row: 1.5, line: 3 },
      { type: 'reveal', file: 'train', row: '3', line: 5 },
      { type: 'reveal', file: 'train', row: NaN, line: 5 },
      { type: 'reveal', file: 'train', row: Infinity, line: 5 },
      { type: 'reveal', file: 'train', row: 3, line: 5.25 },
      { type: 'reveal', file: 'train', row: 3 },
      { type: 'reveal', row: 3, line: 5 },
      { type: 'reveal', file: 'validation', row: 3, line: 5 },
      { type: 'reveal', file: '../../etc/passwd', row: 3, line: 5 },
    ];
    for (const m of invalid) assert.equal(isWebviewMessage(m), false, JSON.stringify(m));
  });

  test('rejects bad rankings, layer choices and request ids', () => {
    const invalid: unknown[] = [
      { type: 'setRanking' },
      { type: 'setLayers' },
      { type: 'setLayers', layers: 2 },
      { type: 'setLayers', layers: 'Last 2' },
      { type: 'setLayers', layers: ['/head/Gemm'] },
      { type: 'setRanking', ranking: 'Influence' },
      { type: 'setRanking', ranking: 1 },
      { type: 'exportCleaned' },
      { type: 'exportCleaned', requestId: 1.5 },
      { type: 'exportCleaned', requestId: '1' },
    ];
    for (const m of invalid) assert.equal(isWebviewMessage(m), false, JSON.stringify(m));
  });
});

describe('isHostMessage', () => {
  test('accepts the two message types and rejects the rest', () => {
    assert.ok(isHostMessage({ type: 'state', state: { explain: null, audit: null, ranking: 'influence' } }));
    assert.ok(isHostMessage({ type: 'reply', requestId: 1, ok: true }));
    // The host never sent busy or error messages: they are not part of the protocol.
    for (const m of [
      null,
      'state',
      {},
      { type: 'state' },
      { type: 'state', state: null },
      { type: 'busy', busy: false },
      { type: 'error', message: 'x' },
      { type: 'reply', requestId: '1', ok: true },
      { type: 'other' },
    ]) {
      assert.equal(isHostMessage(m), false, JSON.stringify(m));
    }
  });
});

describe('fmt', () => {
  test('signs, 3 significant digits, exponent outside [1e-3, 1e5)', () => {
    assert.equal(fmt(0), '0');
    assert.equal(fmt(0.0123), '+0.0123');
    assert.equal(fmt(-0.0123), '-0.0123');
    assert.equal(fmt(0.09774), '+0.0977');
    assert.equal(fmt(-4.56e-5), '-4.56e-5');
    assert.equal(fmt(0.001), '+0.00100');
    assert.equal(fmt(0.000999), '+9.99e-4');
    assert.equal(fmt(123456), '+1.23e+5');
    assert.equal(fmt(2.5), '+2.50');
  });

  test('digits and non-finite values', () => {
    assert.equal(fmt(0.123456, 2), '+0.12');
    assert.equal(fmt(-0.123456, 5), '-0.12346');
    assert.equal(fmt(Infinity), 'Infinity');
    assert.equal(fmt(-Infinity), '-Infinity');
    assert.equal(fmt(NaN), 'NaN');
  });
});

describe('className', () => {
  test('adds the name only when it says more than the id', () => {
    assert.equal(className(null, 3), '3');
    assert.equal(className(['cat', 'dog'], 1), '1 (dog)');
    assert.equal(className(['0', '1', '2'], 2), '2');
    assert.equal(className(['cat'], 5), '5');
    assert.equal(className([], 0), '0');
  });
});

describe('describeReason', () => {
  const classes = ['zero', 'one', 'two'];
  test('LABEL_DISAGREES names the predicted class and p', () => {
    const s = describeReason({ code: 'LABEL_DISAGREES', predicted: 2, p: 0.9714 }, classes);
    assert.equal(s, 'the model predicts 2 (two) (p = 0.971), not the label');
  });
  test('SELF_FLIP names the class without the row and both margins', () => {
    const s = describeReason({ code: 'SELF_FLIP', margin: 0.4123, marginWithout: -1.37, predictedWithout: 1 }, classes);
    assert.match(s, /right only because it is in the training set/);
    assert.match(s, /becomes 1 \(one\)/);
    assert.match(s, /0\.412 → -1\.370/);
  });
  test('HARMS_HELD_OUT gives the signed held-out loss change', () => {
    const s = describeReason({ code: 'HARMS_HELD_OUT', heldOutLossChangeIfRemoved: -0.00213 }, null);
    assert.match(s, /hurts held-out data/);
    assert.match(s, /by -0\.00213$/);
  });
  test('HIGH_SELF_INFLUENCE gives the value and the top percentage', () => {
    const s = describeReason({ code: 'HIGH_SELF_INFLUENCE', selfInfluence: 3.9217, percentile: 99 }, null);
    assert.equal(s, 'unusually high self-influence (3.92, top 1%)');
  });
  test('LOO_LOSS gives both losses', () => {
    const s = describeReason({ code: 'LOO_LOSS', loss: 0.2181, lossWithout: 2.9142 }, null);
    assert.equal(s, 'its loss rises from 0.218 to 2.914 when the model is refit without it');
  });
  test('every code has its own wording', () => {
    const reasons: Reason[] = [
      { code: 'LABEL_DISAGREES', predicted: 1, p: 0.5 },
      { code: 'SELF_FLIP', margin: 1, marginWithout: -1, predictedWithout: 1 },
      { code: 'HARMS_HELD_OUT', heldOutLossChangeIfRemoved: -1 },
      { code: 'HIGH_SELF_INFLUENCE', selfInfluence: 1, percentile: 90 },
      { code: 'LOO_LOSS', loss: 1, lossWithout: 2 },
    ];
    const words = reasons.map((r) => describeReason(r, null));
    assert.equal(new Set(words).size, reasons.length);
    for (const w of words) assert.ok(w.length > 10 && !w.includes('undefined'), w);
  });
});

describe('describeLossChange', () => {
  test('positive: the row helps, and the magnitude has no sign', () => {
    const s = describeLossChange(0.0977);
    assert.match(s, /raise the test loss by 0\.0977/);
    assert.match(s, /it helps this prediction/);
  });
  test('negative: the row hurts', () => {
    const s = describeLossChange(-0.0123);
    assert.match(s, /lower the test loss by 0\.0123/);
    assert.match(s, /it hurts this prediction/);
  });
  test('zero: no change; every wording says first-order', () => {
    assert.match(describeLossChange(0), /would not change the test loss/);
    for (const x of [1, -1, 0]) assert.match(describeLossChange(x), /first-order estimate/);
  });
});

describe('describeAgreement', () => {
  const a = (faithful: boolean, spearman: number) => ({
    faithful,
    spearman,
    k: 10,
    helpful: { overlap: 9, of: 10 },
    harmful: { overlap: 7, of: 8 },
  });
  test('faithful: the verdict with ρ and both overlaps', () => {
    assert.equal(
      describeAgreement(a(true, 0.9712), true),
      'head-only is faithful here (ρ = 0.97, top-10 overlap 9/10 helpful, 7/8 harmful)',
    );
  });
  test('not faithful: where to look from a head result, not from a deeper one; ρ not finite is n/a', () => {
    assert.equal(
      describeAgreement(a(false, 0.367), true),
      'deeper layers change the answer: view with the last 2 layers (ρ = 0.37, top-10 overlap 9/10 helpful, 7/8 harmful)',
    );
    assert.equal(
      describeAgreement(a(false, NaN), false),
      'deeper layers change the answer (ρ = n/a, top-10 overlap 9/10 helpful, 7/8 harmful)',
    );
  });
});

describe('describeLayerSet', () => {
  const L = (...idx: number[]) => idx.map((index) => ({ index, name: `l${index}` }));
  test('the head, the last k, all of them, and layers chosen by name', () => {
    assert.equal(describeLayerSet(L(1), null, 3), "the head 'l1'");
    assert.equal(describeLayerSet(L(1, 2), 'exact', 3), "the last 2 layers ('l1', 'l2'; exact Gauss–Newton)");
    assert.equal(describeLayerSet(L(1, 2, 3), 'ekfac', 3), "all 3 layers ('l1', 'l2', 'l3'; EK-FAC per layer)");
    assert.equal(describeLayerSet(L(2), 'ekfac', 3), "1 layer ('l2'; EK-FAC per layer)");
    assert.equal(describeLayerSet(L(1, 3), 'exact', 3), "2 layers ('l1', 'l3'; exact Gauss–Newton)");
  });
});
