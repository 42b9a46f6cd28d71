// A MicroPython "board" for the flashing tests: the real MicroPython WebAssembly port with its
// in-memory filesystem standing in for the panel's flash. Reads one JSON request per stdin line,
// {"code": "..."}, runs it and answers {"out": <base64 stdout>, "err": <traceback or "">}.
// tests/panel/raw_repl_board.py puts MicroPython's raw-REPL byte protocol on a pty in front of it.
import { createInterface } from "node:readline";
import { loadMicroPython } from "@micropython/micropython-webassembly-pyscript";

let chunks = [];
const mp = await loadMicroPython({
  stdout: (bytes) => chunks.push(Buffer.from(bytes)),
  stderr: (bytes) => chunks.push(Buffer.from(bytes)),
  linebuffer: false,
});
mp.runPython("import sys\nsys.path.insert(0, '/')");  // like a board: modules at / are importable
process.stdout.write(JSON.stringify({ ready: true }) + "\n");
for await (const line of createInterface({ input: process.stdin })) {
  const request = JSON.parse(line);
  chunks = [];
  let err = "";
  try {
    mp.runPython(request.code);
  } catch (e) {
    err = String(e.message || e).replace(/^PythonError: /, "");
  }
  const out = Buffer.concat(chunks).toString("base64");
  process.stdout.write(JSON.stringify({ out, err }) + "\n");
}
