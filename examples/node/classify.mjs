// node classify.mjs RUN_DIR "some text" ["more text" …]: each text's label probabilities from the
// sequence graph, then the same text streamed through the step graph one character at a time.
import { join } from "node:path";
import { classify, open, stream } from "./seqpipe.mjs";

const [run, ...texts] = process.argv.slice(2);
if (!run || texts.length === 0) {
  console.error('usage: node classify.mjs RUN_DIR "some text" ["more text" …]');
  process.exit(2);
}
const sequence = await open(join(run, "onnx", "sequence.onnx"));
const step = await open(join(run, "onnx", "step.onnx"));
for (const text of texts) {
  console.log(JSON.stringify({ text, probabilities: await classify(sequence, text) }));
  const streamed = await stream(step, text);
  console.log(JSON.stringify({ text, streamed }));
}
