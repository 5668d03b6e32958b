/**
 * The PAM config writes SeaBIOS 1.16.2 (Debian's `bios.bin`) makes during
 * POST on the PC machine in `pc/`, from power-on to the lock before boot:
 * recorded with `deno run --allow-ffi --allow-read bench/record_seabios_pam.ts`
 * (which prints this list from a real boot).
 *
 * @module
 */

/** One host bridge config write: offset, width, value. */
export interface PamConfigWrite {
  readonly offset: number;
  readonly width: number;
  readonly value: number;
}

/** Shadow RAM unlock (all 13 pieces read-write), then the lock (12 read-only). */
export const SEABIOS_POST_PAM_WRITES: readonly PamConfigWrite[] = [
  { offset: 0x58, width: 4, value: 0x33333000 },
  { offset: 0x5c, width: 4, value: 0x33333333 },
  { offset: 0x58, width: 4, value: 0x11111000 },
  { offset: 0x5c, width: 4, value: 0x31111111 },
];
