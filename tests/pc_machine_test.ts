import assert from "node:assert/strict";
import { PcMachine } from "../pc/pc_machine.ts";
import { openFdCount, skipWithoutKvm } from "./support/requirements.ts";

/** A 64 KiB "BIOS" whose reset vector (image offset 0xfff0) holds `code`. */
function tinyBios(code: number[]): Uint8Array {
  const image = new Uint8Array(0x10000).fill(0xf4);
  image.set(code, 0xfff0);
  return image;
}

Deno.test({
  name: "pc machine: debug port lines and warm resets through 0xcf9, without firmware",
  ignore: skipWithoutKvm(),
  fn() {
    const fds = openFdCount();
    {
      using machine = PcMachine.create({
        bios: tinyBios([
          0xba,
          0x02,
          0x04, // mov dx, 0x402
          0xb0,
          0x68,
          0xee, // mov al, 'h'; out dx, al
          0xb0,
          0x0a,
          0xee, // mov al, '\n'; out dx, al
          0xba,
          0xf9,
          0x0c, // mov dx, 0xcf9
          0xb0,
          0x06,
          0xee, // mov al, 6; out dx, al: reset
        ]),
        memorySize: 16n << 20n,
      });
      assert.deepEqual(machine.fwCfgFiles, ["etc/boot-fail-wait"]);
      const result = machine.run((e) => e.kind === "reset" && e.boot === 3);
      assert.equal(result.reason, "until");
      assert.deepEqual(
        machine.events.map((e) =>
          e.kind === "debug"
            ? `${e.boot} ${e.text}`
            : e.kind === "reset"
            ? `${e.boot} reset ${e.how} (${e.changes.length} PAM changes)`
            : e.kind
        ),
        ["1 h", "2 reset 0xcf9 (0 PAM changes)", "2 h", "3 reset 0xcf9 (0 PAM changes)"],
      );
      assert.equal(machine.boot, 3);
      assert.equal(machine.debugOutput, "h\nh\n");
      // The image shows at the top of 4 GiB and, through the closed PAM, at 0xf0000.
      const memory = machine.manager.client().guestMemory();
      assert.equal(memory.readU8(0xffff0), 0xba);
      assert.equal(memory.readU8(0xfffffff0), 0xba);
    }
    assert.equal(openFdCount(), fds);
  },
});

Deno.test({
  name: "pc machine: run stops at its time limit while the guest keeps exiting",
  ignore: skipWithoutKvm(),
  fn() {
    using machine = PcMachine.create({
      bios: tinyBios([0xe6, 0x80, 0xeb, 0xfc]), // 1: out 0x80, al; jmp 1b
      memorySize: 16n << 20n,
    });
    const result = machine.run(() => false, 300);
    assert.equal(result.reason, "timeout");
    assert.ok(result.exits > 256);
    assert.ok(result.milliseconds >= 300);
    assert.deepEqual(machine.events, []);
  },
});
