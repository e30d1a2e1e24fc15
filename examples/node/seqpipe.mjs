// Running a seqpipe export from Node.js with onnxruntime-node: the seqpipe.spec in an ONNX file's
// metadata (../seqpipe-spec.mjs reads it) says how to encode the input, which states to carry
// between steps and how to read y.
import { readFileSync } from "node:fs";
import ort from "onnxruntime-node";
import { encodeCharacters, firstStateValues, specOf } from "../seqpipe-spec.mjs";

export { encodeCharacters, specOf };

// --- running the graphs ----------------------------------------------------------------------------

export async function open(path) {
  const session = await ort.InferenceSession.create(path, { executionProviders: ["cpu"] });
  return { session, spec: specOf(readFileSync(path), path) };
}

function firstState(spec, state) {
  return new ort.Tensor("float32", firstStateValues(spec, state), [1, ...state.shape.slice(1)]);
}

// Label probabilities of one text from the sequence graph (one call; its state inputs left out).
export async function classify({ session, spec }, text) {
  const ids = encodeCharacters(spec.encoding.input, text);
  const feeds = {
    x: new ort.Tensor("int64", BigInt64Array.from(ids.map(BigInt)), [1, ids.length]),
    lengths: new ort.Tensor("int64", BigInt64Array.from([BigInt(ids.length)]), [1]),
  };
  const { y } = await session.run(feeds, ["y"]);
  return Object.fromEntries(spec.encoding.output.labels.map((label, i) => [label, y.data[i]]));
}

// Label probabilities after every step of one text from the step graph: the state goes out of each
// call and back into the next, starting from the spec's first state.
export async function stream({ session, spec }, text, onStep = () => {}) {
  const ids = encodeCharacters(spec.encoding.input, text);
  let state = Object.fromEntries(spec.states.map((s) => [s.input, firstState(spec, s)]));
  let probabilities;
  for (const [t, id] of ids.entries()) {
    const out = await session.run({ x: new ort.Tensor("int64", BigInt64Array.from([BigInt(id)]), [1]), ...state });
    state = Object.fromEntries(spec.states.map((s) => [s.input, out[s.output]]));
    probabilities = Object.fromEntries(spec.encoding.output.labels.map((label, i) => [label, out.y.data[i]]));
    onStep(t, probabilities);
  }
  return probabilities;
}
