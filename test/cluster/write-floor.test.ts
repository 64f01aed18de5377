/**
 * The write floor (src/cluster/write-floor.ts): below it, every write this instance sent is visible
 * or never will be. Positions from a clock the test drives.
 */
import assert from 'node:assert/strict';
import { it } from 'node:test';
import { WriteFloor } from '../../src/cluster/write-floor.js';

function driven(start: number) {
  const clock = { now: start };
  return { clock, floor: new WriteFloor(() => clock.now) };
}

it('is the clock with nothing in flight, and the oldest write in flight otherwise', () => {
  const { clock, floor } = driven(100);
  assert.equal(floor.floor(), 100);
  const first = floor.stamp();
  clock.now = 101;
  const second = floor.stamp();
  clock.now = 105;
  assert.equal(floor.floor(), first);
  // The later write answered first: the floor still waits for the earlier one.
  floor.release(second, false);
  assert.equal(floor.floor(), first);
  floor.release(first, false);
  assert.ok(floor.floor() >= 105);
});

it('never moves back, and no two writes share a position: a clock stepped back, or positions raised for a cluster that is ahead', () => {
  const { clock, floor } = driven(100);
  const first = floor.stamp();
  assert.ok(first >= 100);
  clock.now = 90;
  assert.ok(floor.stamp() > first, 'a later write is placed after an earlier one');
  floor.raise(200);
  assert.ok(floor.stamp() >= 200);
  assert.ok(floor.floor() <= 100, 'the writes in flight still hold it');
});

it('holds the position of a write that failed as an outage: the server may still apply it', () => {
  const { clock, floor } = driven(100);
  const failed = floor.stamp();
  floor.release(failed, true);
  clock.now = 110;
  assert.equal(floor.floor(), failed);
  const stored = floor.stamp();
  floor.release(stored, false);
  assert.equal(floor.floor(), failed);
});
