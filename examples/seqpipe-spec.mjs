// What any JavaScript program needs to read a seqpipe export, in Node.js or a browser alike: the
// seqpipe.spec in the ONNX file's metadata (read from the file's protobuf bytes), the characters
// encoding it describes, and each state's first value. Nothing here knows a particular model; what
// it knows is the ONNX contract (docs/onnx.md).

// --- the ONNX file's metadata_props (ModelProto field 14), read from its protobuf bytes --------------

function varint(bytes, at) {
  let value = 0n;
  let shift = 0n;
  for (;;) {
    const byte = bytes[at++];
    value |= BigInt(byte & 0x7f) << shift;
    if (byte < 0x80) return [Number(value), at];
    shift += 7n;
  }
}

// Each field of one protobuf message: [number, wire type, value (a number or a byte slice)].
function* fields(bytes) {
  let at = 0;
  while (at < bytes.length) {
    let key;
    [key, at] = varint(bytes, at);
    const number = key >> 3;
    const wire = key & 7;
    if (wire === 0) {
      let value;
      [value, at] = varint(bytes, at);
      yield [number, wire, value];
    } else if (wire === 2) {
      let length;
      [length, at] = varint(bytes, at);
      yield [number, wire, bytes.subarray(at, at + length)];
      at += length;
    } else if (wire === 1) {
      at += 8;
    } else if (wire === 5) {
      at += 4;
    } else {
      throw new Error(`unsupported protobuf wire type ${wire}`);
    }
  }
}

export function metadata(bytes) {
  const text = new TextDecoder();
  const props = {};
  for (const [number, wire, value] of fields(bytes)) {
    if (number !== 14 || wire !== 2) continue; // ModelProto.metadata_props
    let key = "";
    let val = "";
    for (const [n, , v] of fields(value)) {
      if (n === 1) key = text.decode(v);
      if (n === 2) val = text.decode(v);
    }
    props[key] = val;
  }
  return props;
}

// The seqpipe.spec of an ONNX file's bytes (a Uint8Array); `where` names the file in errors.
export function specOf(bytes, where = "the model") {
  const props = metadata(bytes);
  if (!props["seqpipe.spec"]) throw new Error(`${where}: no seqpipe.spec in its metadata; not a seqpipe export`);
  return JSON.parse(props["seqpipe.spec"]);
}

// --- encoding, as the spec's encoding.input says ---------------------------------------------------

export function encodeCharacters(input, text) {
  if (input.kind !== "characters") throw new Error(`this example encodes characters, not ${input.kind}`);
  const index = new Map(input.symbols.map((symbol, id) => [symbol, id]));
  const units = Array.from(input.lowercase ? text.toLowerCase() : text); // code points, as Python iterates a str
  const ids = units.map((unit) => index.get(unit) ?? input.unk_id);
  return input.max_length ? ids.slice(0, input.max_length) : ids;
}

// Each state's first value as [slots * size] numbers: zeros unless the spec lists learned values.
export function firstStateValues(spec, state) {
  const [, slots, size] = state.shape;
  const values = spec.initial_state.values?.[state.name];
  return values ? Float32Array.from(values.flat()) : new Float32Array(slots * size);
}
