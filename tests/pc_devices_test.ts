import assert from "node:assert/strict";
import { buildMarkerRom, MARKER_ROM_NAME, MARKER_TARGET_OFFSET } from "../pc/option_rom.ts";
import { FwCfg, FwCfgKey } from "../pc/fw_cfg.ts";
import { Cmos } from "../pc/cmos.ts";
import { PciBus, PciConfigSpace } from "../pc/pci_bus.ts";

const sum = (bytes: Uint8Array) => bytes.reduce((a, b) => (a + b) & 0xff, 0);

Deno.test("marker option ROM: header, checksums, PnP header with a boot entry", () => {
  const rom = buildMarkerRom();
  assert.equal(rom.length, 512);
  assert.deepEqual([...rom.subarray(0, 3)], [0x55, 0xaa, 1]);
  assert.equal(sum(rom), 0);
  const view = new DataView(rom.buffer);
  const pnp = view.getUint16(0x1a, true);
  assert.equal(pnp, 0x20);
  assert.equal(new TextDecoder().decode(rom.subarray(pnp, pnp + 4)), "$PnP");
  assert.equal(sum(rom.subarray(pnp, pnp + rom[pnp + 5] * 16)), 0);
  const name = view.getUint16(pnp + 0x10, true);
  assert.equal(
    new TextDecoder().decode(rom.subarray(name, name + MARKER_ROM_NAME.length)),
    MARKER_ROM_NAME,
  );
  assert.equal(view.getUint16(pnp + 0x1a, true), 0x80); // BEV
  assert.equal(rom[MARKER_TARGET_OFFSET], 0xa5);
});

Deno.test("fw_cfg: signature, id, RAM size and the file directory, byte by byte", () => {
  const fw = new FwCfg(128n << 20n);
  fw.addFile("etc/boot-fail-wait", new Uint8Array([0, 0, 0, 0]));
  fw.addFile("genroms/a.rom", new Uint8Array(512));
  const read = (key: number, n: number) => {
    fw.write(0x510, 2, key);
    return Array.from({ length: n }, () => fw.read(0x511, 1));
  };
  assert.deepEqual(read(FwCfgKey.signature, 4), [0x51, 0x45, 0x4d, 0x55]); // "QEMU"
  assert.deepEqual(read(FwCfgKey.id, 4), [1, 0, 0, 0]);
  assert.deepEqual(read(FwCfgKey.ramSize, 8), [0, 0, 0, 8, 0, 0, 0, 0]);
  const dir = new Uint8Array(read(FwCfgKey.fileDir, 4 + 128));
  const v = new DataView(dir.buffer);
  assert.equal(v.getUint32(0), 2);
  assert.deepEqual([v.getUint32(4 + 64), v.getUint16(8 + 64)], [512, 0x21]);
  assert.equal(new TextDecoder().decode(dir.subarray(4 + 64 + 8, 4 + 64 + 21)), "genroms/a.rom");
  assert.deepEqual(read(0x7777, 2), [0, 0]);
});

Deno.test("cmos: RAM sizes where SeaBIOS reads them", () => {
  const cmos = new Cmos(128n << 20n, 1n << 30n);
  const at = (i: number) => {
    cmos.write(0x70, 1, i | 0x80); // NMI mask bit is not part of the index
    return cmos.read(0x71, 1);
  };
  assert.equal(at(0x34) | (at(0x35) << 8), (112 << 20) >> 16);
  assert.equal(at(0x30) | (at(0x31) << 8), 0xfc00);
  assert.equal(at(0x5b) | (at(0x5c) << 8) | (at(0x5d) << 16), (1 << 30) / 65536);
  assert.equal(at(0x5f), 0);
});

Deno.test("pci bus: config mechanism #1, absent functions, reset control", () => {
  let resets = 0;
  const bus = new PciBus(() => resets++);
  bus.add(1, 0, new PciConfigSpace(0x8086, 0x7000, 0x060100, 0));
  bus.write(0xcf8, 4, 0x80000800);
  assert.equal(bus.read(0xcfc, 4), 0x70008086);
  assert.equal(bus.read(0xcfe, 2), 0x7000);
  bus.write(0xcf8, 4, 0x80000860);
  bus.write(0xcfd, 1, 0x0b);
  assert.equal(bus.read(0xcfc, 4), 0x0b00);
  bus.write(0xcf8, 4, 0x80001000);
  assert.equal(bus.read(0xcfc, 4), 0xffffffff);
  bus.write(0xcf9, 1, 0x02);
  assert.equal(resets, 0);
  bus.write(0xcf9, 1, 0x06);
  assert.equal(resets, 1);
});
