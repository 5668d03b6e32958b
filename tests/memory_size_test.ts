import assert from "node:assert/strict";
import { MemorySize } from "../mod.ts";

Deno.test("MemorySize", async (t) => {
  await t.step("spec examples", () => {
    assert.equal(`${new MemorySize(1n << 30n)}`, "1 GB");
    assert.equal(`${new MemorySize(257n << 20n)}`, "257 MB");
    assert.equal(`${new MemorySize(2n << 20n)}`, "2 MB");
    assert.equal(`${new MemorySize(4097n)}`, "4097 bytes");
    assert.equal(`${new MemorySize(0n)}`, "0 bytes");
    assert.equal(`${new MemorySize(1536n << 10n)}`, "1536 KB");
  });

  await t.step("largest unit that divides exactly", () => {
    assert.equal(`${new MemorySize(1n << 40n)}`, "1 TB");
    assert.equal(`${new MemorySize(3n << 40n)}`, "3 TB");
    assert.equal(`${new MemorySize(1025n << 30n)}`, "1025 GB");
    assert.equal(`${new MemorySize(1536n << 20n)}`, "1536 MB");
    assert.equal(`${new MemorySize(1024n)}`, "1 KB");
    assert.equal(`${new MemorySize(4096n)}`, "4 KB");
    assert.equal(`${new MemorySize(1023n)}`, "1023 bytes");
    assert.equal(`${new MemorySize(1n)}`, "1 bytes");
    assert.equal(`${new MemorySize(1n << 63n)}`, "8388608 TB");
  });

  await t.step("accepts numbers and keeps bytes", () => {
    const size = new MemorySize(2 * 1024 * 1024);
    assert.equal(size.bytes, 2097152n);
    assert.equal(`${size}`, "2 MB");
  });
});
