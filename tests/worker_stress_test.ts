import assert from "node:assert/strict";
import { skipWithoutKvm } from "./support/requirements.ts";

const MAIN = new URL("./support/stress/main.ts", import.meta.url).pathname;

Deno.test({
  name: "Workers hammer guest memory while the manager changes it (subprocess, about 6 s)",
  ignore: skipWithoutKvm(),
  async fn() {
    const seed = Deno.env.get("MEMBACKING_STRESS_SEED");
    const args = ["run", "--allow-ffi", "--allow-read", "--allow-env", MAIN, "6"];
    if (seed !== undefined) args.push(seed);
    const output = await new Deno.Command(Deno.execPath(), {
      args,
      stdout: "piped",
      stderr: "piped",
    }).output();
    const stdout = new TextDecoder().decode(output.stdout);
    const stderr = new TextDecoder().decode(output.stderr);
    console.log(stdout.trimEnd());
    // A signal (SIGSEGV, SIGBUS) is exactly what the grace period must rule out.
    assert.equal(output.signal, null, `the stress program died of ${output.signal}\n${stderr}`);
    assert.equal(output.code, 0, `${stdout}\n${stderr}`);
    const counters = JSON.parse(stdout.split("\n")[1]);
    assert.ok(counters.accessesThatMetAChange > 0);
    assert.ok(counters.gracePeriodsThatWaited > 0);
    assert.ok(counters.readOnlyChecks > 0);
    assert.equal(counters.stalledReaders, 0);
  },
});
