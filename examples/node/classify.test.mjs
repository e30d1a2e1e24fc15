// node --test, run by seqpipe's tests with SEQPIPE_RUN (a trained classify run) and SEQPIPE_EXPECTED
// (a JSON file of seqpipe predict --json results for the same texts): Node must give the same
// probabilities from the sequence graph and, streamed, from the step graph.
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";
import { classify, open, specOf, stream } from "./seqpipe.mjs";

const run = process.env.SEQPIPE_RUN;
const expected = run ? JSON.parse(readFileSync(process.env.SEQPIPE_EXPECTED, "utf-8")) : [];
const close = (a, b) => Object.keys(b).every((label) => Math.abs(a[label] - b[label]) <= 1e-6);

test("the spec is read from the ONNX file's metadata", { skip: !run }, () => {
  const spec = specOf(readFileSync(join(run, "onnx", "step.onnx")));
  assert.equal(spec.task, "classify");
  assert.equal(spec.graph, "step");
});

test("the sequence graph gives seqpipe predict's probabilities", { skip: !run }, async () => {
  const sequence = await open(join(run, "onnx", "sequence.onnx"));
  for (const { text, probabilities } of expected) {
    const got = await classify(sequence, text);
    assert.ok(close(got, probabilities), `${text}: ${JSON.stringify(got)} vs ${JSON.stringify(probabilities)}`);
  }
});

test("the step graph, streamed one step at a time, ends with the same probabilities", { skip: !run }, async () => {
  const step = await open(join(run, "onnx", "step.onnx"));
  for (const { text, probabilities } of expected) {
    let steps = 0;
    const got = await stream(step, text, () => steps++);
    assert.equal(steps, Math.min(Array.from(text).length, step.spec.encoding.input.max_length ?? Infinity));
    assert.ok(close(got, probabilities), `${text}: ${JSON.stringify(got)} vs ${JSON.stringify(probabilities)}`);
  }
});
