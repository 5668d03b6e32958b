/**
 * Seeded random numbers for model-based tests: mulberry32, so a failing
 * sequence can be replayed from its seed.
 *
 * @module
 */

/** A mulberry32 generator: each call returns a float in [0, 1). */
export function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 2 ** 32;
  };
}

/** A mulberry32 generator of integers: `next(n)` is in `[0, n)`. */
export function mulberry32Below(seed: number): (n: number) => number {
  const next = mulberry32(seed);
  return (n) => Math.floor(next() * n);
}

/** A test's random source, with the seed it was made from. */
export interface SeededRandom {
  readonly seed: number;
  /** An integer in `[0, n)`. */
  below(n: number): number;
  /** True `percent` times in 100. */
  chance(percent: number): boolean;
}

/**
 * The seed from environment variable `variable` (a replay), or a fresh
 * one; printed with the line that replays it.
 */
export function testSeed(variable: string, label: string): number {
  const text = Deno.env.get(variable);
  const seed = text === undefined ? Math.floor(Math.random() * 2 ** 31) : Number(text);
  console.log(`${label} seed ${seed} (replay: ${variable}=${seed})`);
  return seed;
}

/** A random source seeded by {@linkcode testSeed}. */
export function seededRandom(variable: string, label: string): SeededRandom {
  const seed = testSeed(variable, label);
  const below = mulberry32Below(seed);
  return { seed, below, chance: (percent) => below(100) < percent };
}
