/** The shared review order and held-out group estimate of src/core/scores/ranking.ts. */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { heldOutChangeIfRemoved, suspicionOrder } from '../../src/core/scores/ranking';

describe('suspicionOrder', () => {
  it('puts the most suspicious rows first and breaks ties by the lower row', () => {
    assert.deepEqual(suspicionOrder(Float64Array.from([0.5, 2, 0.5, -1, 2])), [1, 4, 0, 2, 3]);
    assert.deepEqual(suspicionOrder(new Float64Array(0)), []);
  });
});

describe('heldOutChangeIfRemoved', () => {
  it('is minus the summed held-out influence of the rows over n·|V|', () => {
    const influence = Float64Array.from([0.4, -0.2, 1.0, 0.6]);
    assert.equal(heldOutChangeIfRemoved(influence, [0, 3], 4, 5), -1 / 20);
    assert.equal(heldOutChangeIfRemoved(influence, [1], 4, 5), 0.2 / 20);
    assert.equal(Math.abs(heldOutChangeIfRemoved(influence, [], 4, 5)), 0, 'no rows, no change');
  });
});
