// Runs tests/panel/cases.py inside the real MicroPython WebAssembly port (npm package
// @micropython/micropython-webassembly-pyscript), with board/frontpanel copied into its
// filesystem as the `frontpanel` package - the same layout the panel has after flashing.
// Prints one JSON line: {"implementation", "passed": [...], "failed": {name: error}}.
import { readFileSync, readdirSync } from "node:fs";
import { join } from "node:path";
import { loadMicroPython } from "@micropython/micropython-webassembly-pyscript";

const root = process.argv[2];
const out = [];
const mp = await loadMicroPython({
  stdout: (line) => out.push(line),
  stderr: (line) => process.stderr.write(line + "\n"),
  linebuffer: true,
});
mp.FS.mkdir("/lib");
mp.FS.mkdir("/lib/frontpanel");
const src = join(root, "board", "frontpanel");
for (const name of readdirSync(src)) {
  if (name.endsWith(".py") && name !== "main.py") {
    mp.FS.writeFile(`/lib/frontpanel/${name}`, readFileSync(join(src, name)));
  }
}
mp.FS.writeFile("/lib/panel_cases.py", readFileSync(join(root, "tests", "panel", "cases.py")));
mp.runPython(`
import sys, json
sys.path.insert(0, "/lib")
import panel_cases
passed = []
failed = {}
for name in panel_cases.CASES:
    try:
        getattr(panel_cases, name)()
        passed.append(name)
    except Exception as e:
        failed[name] = repr(e)
print(json.dumps({"implementation": sys.implementation.name, "passed": passed, "failed": failed}))
`);
for (const line of out) console.log(line);
