// The page's logic: open step.onnx (?model=URL, default model/step.onnx), read its seqpipe.spec,
// and on every edit step the graph through the characters typed since the last one; an edit that
// is not an append starts again from the spec's first state.
import * as ort from "./node_modules/onnxruntime-web/dist/ort.wasm.min.mjs";
import { encodeCharacters, firstStateValues, specOf } from "../seqpipe-spec.mjs";

ort.env.wasm.wasmPaths = new URL("./node_modules/onnxruntime-web/dist/", import.meta.url).href;
ort.env.wasm.numThreads = 1; // threads need a cross-origin-isolated page; one is plenty for one step

const url = new URLSearchParams(location.search).get("model") ?? "model/step.onnx";
const status = document.getElementById("status");
const box = document.getElementById("text");
const scores = document.getElementById("scores");

const bytes = new Uint8Array(await (await fetch(url)).arrayBuffer());
const spec = specOf(bytes, url);
const session = await ort.InferenceSession.create(bytes, { executionProviders: ["wasm"] });
const labels = spec.encoding.output.labels;
const start = () =>
  Object.fromEntries(spec.states.map((s) => [s.input, new ort.Tensor("float32", firstStateValues(spec, s), [1, ...s.shape.slice(1)])]));

let read = []; // the ids stepped so far
let state = start();
let probabilities = null;

async function update(text) {
  const ids = encodeCharacters(spec.encoding.input, text);
  const appended = ids.length >= read.length && read.every((id, t) => ids[t] === id);
  if (!appended) {
    read = [];
    state = start();
    probabilities = null;
  }
  for (const id of ids.slice(read.length)) {
    const out = await session.run({ x: new ort.Tensor("int64", BigInt64Array.from([BigInt(id)]), [1]), ...state });
    state = Object.fromEntries(spec.states.map((s) => [s.input, out[s.output]]));
    probabilities = Object.fromEntries(labels.map((label, i) => [label, out.y.data[i]]));
    read.push(id);
  }
  render();
}

function render() {
  scores.replaceChildren(
    ...labels.map((label) => {
      const p = probabilities ? probabilities[label] : 0;
      const row = document.createElement("div");
      row.className = "bar";
      row.innerHTML = `<span></span><span class="fill" style="width:${(p * 20).toFixed(2)}rem"></span><span>${p.toFixed(3)}</span>`;
      row.firstChild.textContent = label;
      return row;
    }),
  );
  scores.dataset.steps = String(read.length);
  scores.dataset.probabilities = JSON.stringify(probabilities); // full precision, for tests
}

let pending = Promise.resolve();
box.addEventListener("input", () => {
  const text = box.value;
  pending = pending.then(() => update(text)); // one edit at a time, in order
  window.seqpipe.pending = pending;
});
window.seqpipe = { spec, pending, ready: true };
box.disabled = false;
status.textContent = `${spec.task} model, ${spec.cell} cell, ${spec.sizes.hidden} units: ${labels.join(", ")}`;
render();
