/**
 * The ring of fds the event loop hands to the fd closer Worker (see
 * src/fd_closer.ts): layout and the operations of both sides, on shared
 * Int32 words. No I/O; one producer (the loop), one consumer (the Worker).
 *
 * | word  | field                                                       |
 * |------:|-------------------------------------------------------------|
 * |     0 | head: count of fds the Worker has taken (written by it)     |
 * |     1 | tail: count of fds handed over (written by the loop)        |
 * |     2 | stop: 1 = exit once the ring is empty                      |
 * |     3 | wake-up sequence: bumped with each hand-over and the stop   |
 * | 4 ... | the ring: fd of hand-over i at 4 + (i mod capacity)         |
 *
 * Counts wrap as int32; the capacity is a power of two, so `i mod capacity`
 * stays right across the wrap. The consumer reads the sequence before it
 * looks at the ring and waits only while it is unchanged, so no wake-up is
 * lost.
 *
 * @module
 */

/** Word indexes of the ring. */
export const RingWord = { HEAD: 0, TAIL: 1, STOP: 2, SEQ: 3, FDS: 4 } as const;

/** Shared words for a ring of `capacity` fds (a power of two). */
export function createRing(capacity: number): Int32Array {
  if (!Number.isInteger(capacity) || capacity < 1 || (capacity & (capacity - 1)) !== 0) {
    throw new RangeError(`ring capacity ${capacity} must be a power of two`);
  }
  return new Int32Array(new SharedArrayBuffer(4 * (RingWord.FDS + capacity)));
}

/** Number of fds the ring holds. */
export function ringCapacity(words: Int32Array): number {
  return words.length - RingWord.FDS;
}

/** fds handed over and not yet taken. */
export function ringLength(words: Int32Array): number {
  return (Atomics.load(words, RingWord.TAIL) - Atomics.load(words, RingWord.HEAD)) | 0;
}

/** Producer: append `fd` and wake the consumer; false if the ring is full. */
export function ringPush(words: Int32Array, fd: number): boolean {
  const capacity = ringCapacity(words);
  const tail = Atomics.load(words, RingWord.TAIL);
  if (((tail - Atomics.load(words, RingWord.HEAD)) | 0) >= capacity) return false;
  Atomics.store(words, RingWord.FDS + (tail & (capacity - 1)), fd);
  Atomics.store(words, RingWord.TAIL, (tail + 1) | 0);
  ringWake(words);
  return true;
}

/** Producer: the consumer exits once the ring is empty. */
export function ringStop(words: Int32Array): void {
  Atomics.store(words, RingWord.STOP, 1);
  ringWake(words);
}

function ringWake(words: Int32Array): void {
  Atomics.add(words, RingWord.SEQ, 1);
  Atomics.notify(words, RingWord.SEQ);
}

/**
 * Consumer: take the next fd (it counts as taken from now on, so that nobody
 * else closes it), or `null` if the ring is empty. `seq` is the sequence
 * value to wait on when it is: read before the ring was looked at.
 */
export function ringTake(words: Int32Array): { fd: number } | { fd: null; seq: number } {
  const seq = Atomics.load(words, RingWord.SEQ);
  const head = Atomics.load(words, RingWord.HEAD);
  if (head === Atomics.load(words, RingWord.TAIL)) return { fd: null, seq };
  const fd = Atomics.load(words, RingWord.FDS + (head & (ringCapacity(words) - 1)));
  Atomics.store(words, RingWord.HEAD, (head + 1) | 0);
  return { fd };
}

/** Consumer: the producer asked it to stop. */
export function ringStopped(words: Int32Array): boolean {
  return Atomics.load(words, RingWord.STOP) !== 0;
}
