/** bench/memory.ts's growth figure: a GC sawtooth is flat, a leak is not. */
import assert from "node:assert/strict";
import { growthKiB } from "../bench/memory.ts";

function series(values: number[]): [number, number][] {
  return values.map((kib, i) => [(i + 1) * 100_000, kib]);
}

Deno.test("growthKiB: fewer than two samples give null", () => {
  assert.equal(growthKiB([]), null);
  assert.equal(growthKiB(series([5])), null);
});

Deno.test("growthKiB: a sawtooth that ends low or high is flat", () => {
  const saw = [110, 130, 150, 165, 120, 140, 160, 165, 115, 135, 155, 164];
  assert.ok(Math.abs(growthKiB(series(saw))!) <= 1);
  assert.ok(Math.abs(growthKiB(series([...saw, 104]))!) <= 1);
});

Deno.test("growthKiB: a steady leak shows", () => {
  const leak = Array.from({ length: 10 }, (_, i) => 100_000 + 1_000 * i);
  assert.equal(growthKiB(series(leak)), 5_000);
  // a leak under a sawtooth shows too
  const both = leak.map((v, i) => v + (i % 3) * 20_000);
  assert.ok(growthKiB(series(both))! >= 4_000);
});
