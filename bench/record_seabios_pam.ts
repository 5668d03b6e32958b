/**
 * Boots SeaBIOS on the PC machine in `pc/` up to its boot entry and prints
 * the PAM config writes of POST, in the form of
 * `bench/seabios_pam_sequence.ts`.
 *
 * Run: deno run --allow-ffi --allow-read bench/record_seabios_pam.ts [bios.bin]
 *
 * @module
 */

import { PcMachine } from "../pc/pc_machine.ts";

const bios = Deno.readFileSync(Deno.args[0] ?? "/usr/share/seabios/bios.bin");
using machine = PcMachine.create({ bios });
machine.run((e) => e.kind === "debug" && e.text.startsWith("Booting from"));
for (const e of machine.events) {
  if (e.kind === "pam") {
    console.log(
      `  { offset: 0x${e.offset.toString(16)}, width: ${e.width}, value: 0x${
        e.value.toString(16)
      } },`,
    );
  }
}
