#!/usr/bin/env node
// Persistent ONNX Runtime benchmark worker, driven over stdin/stdout with one JSON object per line.
//
//   node ort_worker.js --model FILE.onnx --threads N [--system NAME]
//
// The model is an export from export_onnx.py (or its QDQ version): input "image", float32
// [3, H, W] in [0, 1]; outputs "boxes" [N, 4], "labels" [N] and "scores" [N] in the input
// image's pixel coordinates. After loading it prints
//   {"event":"ready","system":NAME,"load_ms":...,"model_bytes":...,"details":{...}}
// and then handles each request line:
//   {"op":"run","input":"/path/x.rgb","width":W,"height":H,"image":"eval_0001.jpg","dump":"/path/out.json"}
//     reads H*W*3 bytes of RGB uint8 (HWC, row-major), times the conversion to a float CHW
//     tensor plus the session run and the copy of the outputs into detections, writes the
//     optional dump file (untimed) and prints {"event":"result","ms":...,"detections":N}.
//   {"op":"quit"} exits with status 0, and so does the end of stdin.
// Any error prints {"event":"error","message":"..."} and exits with status 1.
// Only protocol lines go to stdout; logs go to stderr.
'use strict';

const fs = require('node:fs');
const path = require('node:path');
const readline = require('node:readline');
const { parseArgs } = require('node:util');

const { loadOnnxRuntime, rgbToChwFloat } = require('./ort_common');

const INPUT_NAME = 'image';

// An expected failure, such as an invalid command line, request or input file. It is reported
// without a stack trace.
class InputError extends Error {}

function log(message) {
  process.stderr.write(`ort_worker: ${message}\n`);
}

function send(event) {
  process.stdout.write(JSON.stringify(event) + '\n');
}

function parseCommandLine(argv) {
  let values;
  try {
    ({ values } = parseArgs({
      args: argv,
      options: {
        model: { type: 'string' },
        threads: { type: 'string' },
        system: { type: 'string', default: 'onnxruntime_fp32' },
        help: { type: 'boolean', default: false },
      },
      strict: true,
    }));
  } catch (error) {
    throw new InputError(`invalid command line: ${error.message}`);
  }
  if (values.help) {
    process.stderr.write(
      'usage: node ort_worker.js --model FILE.onnx --threads N [--system NAME]\n' +
      '  --model FILE.onnx  detector exported by export_onnx.py (FP32 or QDQ INT8)\n' +
      '  --threads N        ONNX Runtime intra-op threads (inter-op threads: 1)\n' +
      '  --system NAME      name reported in the ready event (default: onnxruntime_fp32)\n' +
      'Reads JSON requests on stdin and writes JSON events on stdout; see the top of this file.\n');
    process.exit(0);
  }
  if (!values.model) throw new InputError('invalid command line: --model FILE.onnx is required');
  if (values.threads === undefined) throw new InputError('invalid command line: --threads N is required');
  const threads = Number(values.threads);
  if (!Number.isInteger(threads) || threads < 1) {
    throw new InputError(`invalid command line: --threads must be an integer >= 1, found '${values.threads}'`);
  }
  return { model: values.model, threads, system: values.system };
}

function positiveIntField(request, key) {
  const value = request[key];
  if (!Number.isInteger(value) || value <= 0) {
    throw new InputError(`request field '${key}' must be a positive integer, found ${JSON.stringify(value)}`);
  }
  return value;
}

function stringField(request, key, required) {
  const value = request[key];
  if (value === undefined && !required) return undefined;
  if (typeof value !== 'string' || value.length === 0) {
    throw new InputError(`request field '${key}' must be a non-empty string, found ${JSON.stringify(value)}`);
  }
  return value;
}

function readRgbFile(file, width, height) {
  const expected = width * height * 3;
  let bytes;
  try {
    bytes = fs.readFileSync(file);
  } catch (error) {
    if (error.code === 'ENOENT') throw new InputError(`${file}: input file not found`);
    throw new InputError(`${file}: cannot read the input file: ${error.message}`);
  }
  if (bytes.length !== expected) {
    throw new InputError(
      `${file}: size is ${bytes.length} bytes, expected ${expected} (${width}x${height} RGB, 3 bytes per pixel)`);
  }
  return bytes;
}

function toDetections(outputs) {
  const boxes = outputs.boxes.data;
  const labels = outputs.labels.data;
  const scores = outputs.scores.data;
  const detections = [];
  for (let i = 0; i < scores.length; ++i) {
    detections.push({
      box: [boxes[4 * i], boxes[4 * i + 1], boxes[4 * i + 2], boxes[4 * i + 3]],
      score: scores[i],
      label: Number(labels[i]),
    });
  }
  return detections;
}

function writeFileAtomically(file, text) {
  const directory = path.dirname(file);
  fs.mkdirSync(directory, { recursive: true });
  const temp = path.join(directory, `.${path.basename(file)}.${process.pid}.tmp`);
  try {
    fs.writeFileSync(temp, text);
    fs.renameSync(temp, file);
  } catch (error) {
    fs.rmSync(temp, { force: true });
    throw new Error(`${file}: cannot write the dump file: ${error.message}`);
  }
}

async function handleRun(ort, session, request) {
  const input = stringField(request, 'input', true);
  const width = positiveIntField(request, 'width');
  const height = positiveIntField(request, 'height');
  const image = stringField(request, 'image', false) || path.basename(input);
  const dump = stringField(request, 'dump', false);

  const rgb = readRgbFile(input, width, height);
  const start = process.hrtime.bigint();
  const tensor = new ort.Tensor('float32', rgbToChwFloat(rgb, width, height), [3, height, width]);
  const outputs = await session.run({ [INPUT_NAME]: tensor });
  const detections = toDetections(outputs);
  const ms = Number(process.hrtime.bigint() - start) / 1e6;
  for (const output of Object.values(outputs)) output.dispose();

  if (dump !== undefined) {
    writeFileAtomically(dump, JSON.stringify({ image, width, height, detections }));
  }
  return { event: 'result', ms, detections: detections.length };
}

async function serve(ort, session) {
  const lines = readline.createInterface({ input: process.stdin, crlfDelay: Infinity, terminal: false });
  let lineNumber = 0;
  for await (const rawLine of lines) {
    ++lineNumber;
    const line = rawLine.trim();
    if (line.length === 0) continue;
    let request;
    try {
      request = JSON.parse(line);
    } catch (error) {
      throw new InputError(`request line ${lineNumber} is not valid JSON: ${error.message}`);
    }
    if (request === null || typeof request !== 'object' || Array.isArray(request)) {
      throw new InputError(`request line ${lineNumber} must be a JSON object`);
    }
    if (request.op === 'quit') {
      log(`quit requested after ${lineNumber} lines`);
      return;
    }
    if (request.op !== 'run') {
      throw new InputError(
        `request line ${lineNumber}: unknown op ${JSON.stringify(request.op)}, expected 'run' or 'quit'`);
    }
    send(await handleRun(ort, session, request));
  }
  log('end of input');
}

async function main() {
  const args = parseCommandLine(process.argv.slice(2));
  let modelBytes;
  try {
    modelBytes = fs.statSync(args.model).size;
  } catch (error) {
    throw new InputError(`${args.model}: model file not found or unreadable (${error.code})`);
  }
  const ort = loadOnnxRuntime();
  const sessionOptions = {
    executionProviders: ['cpu'],
    intraOpNumThreads: args.threads,
    interOpNumThreads: 1,
    executionMode: 'sequential',
    graphOptimizationLevel: 'all',
    // 3: errors only, which keeps the worker's log short. ONNX Runtime logs to stderr, which
    // the protocol does not use.
    logSeverityLevel: 3,
  };

  const start = process.hrtime.bigint();
  const session = await ort.InferenceSession.create(args.model, sessionOptions);
  const loadMs = Number(process.hrtime.bigint() - start) / 1e6;
  if (!session.inputNames.includes(INPUT_NAME)) {
    throw new InputError(`${args.model}: the graph has inputs [${session.inputNames}], expected '${INPUT_NAME}'`);
  }
  log(`loaded ${args.model} in ${loadMs.toFixed(0)} ms`);

  send({
    event: 'ready',
    system: args.system,
    load_ms: loadMs,
    model_bytes: modelBytes,
    details: {
      onnxruntime_version: ort.env.versions.node,
      onnxruntime_common_version: ort.env.versions.common,
      node_version: process.versions.node,
      model: path.basename(args.model),
      threads: args.threads,
      interop_threads: 1,
      execution_mode: sessionOptions.executionMode,
      graph_optimization_level: sessionOptions.graphOptimizationLevel,
      execution_providers: sessionOptions.executionProviders,
    },
  });
  await serve(ort, session);
  await session.release();
}

// process.exit() because an open stdin would otherwise keep the event loop alive. Node.js
// writes to files, and on Linux to pipes, synchronously ("A note on process I/O" in the
// Node.js process documentation), so every line is out before the process exits.
main().then(
  () => process.exit(0),
  (error) => {
    if (!(error instanceof InputError)) log(error.stack || String(error));
    const message = error.message || String(error);
    log(`error: ${message}`);
    send({ event: 'error', message });
    process.exit(1);
  });
