#!/usr/bin/env node
// ONNX Runtime helper for quantize_onnx_qdq.py, which runs it twice:
//
//   node ort_calibrate.js optimize --model IN.onnx --out OUT.onnx
//     applies ONNX Runtime's basic graph optimizations (constant folding, Conv+Mul and
//     Conv+Add fusion, which fold torchvision's FrozenBatchNorm2d into the convolutions)
//     and saves the graph. Basic optimizations only produce standard ONNX operators.
//
//   node ort_calibrate.js calibrate --model AUGMENTED.onnx --images LIST.json --out STATS.json
//                                   [--threads N] [--method minmax|percentile] [--percentile P]
//     runs the model over the calibration images and records a range for every graph
//     output except the detector's own (boxes, labels, scores). minmax (the default) keeps
//     the minimum and maximum seen over all images. percentile runs the images a second
//     time to fill a 2048-bin histogram per tensor over that range and keeps the central
//     P percent (default 99.99), cutting (100 - P) / 2 percent from each tail.
//     LIST.json is [{"path": "/x.rgb", "width": W, "height": H}, ...] with raw RGB uint8 HWC
//     files. STATS.json is {"images": N, "method": ..., "tensors": {name: {"min", "max"} or null}}.
//
// Progress goes to stderr; exits with status 1 and a one-line message on failure.
'use strict';

const fs = require('node:fs');
const path = require('node:path');
const { parseArgs } = require('node:util');

const { loadOnnxRuntime, rgbToChwFloat } = require('./ort_common');

const INPUT_NAME = 'image';
const DETECTOR_OUTPUTS = new Set(['boxes', 'labels', 'scores']);
const HISTOGRAM_BINS = 2048;

class UsageError extends Error {}

function parseCommandLine(argv) {
  const [command, ...rest] = argv;

  if (command !== 'optimize' && command !== 'calibrate') {
    throw new UsageError(`expected the command 'optimize' or 'calibrate', found ${JSON.stringify(command)}`);
  }
  let values;
  try {
    ({ values } = parseArgs({
      args: rest,
      options: {
        model: { type: 'string' },
        out: { type: 'string' },
        images: { type: 'string' },
        threads: { type: 'string', default: '2' },
        method: { type: 'string', default: 'minmax' },
        percentile: { type: 'string', default: '99.99' },
      },
      strict: true,
    }));
  } catch (error) {
    throw new UsageError(error.message);
  }

  if (!values.model) throw new UsageError('--model FILE.onnx is required');
  if (!values.out) throw new UsageError('--out FILE is required');
  if (command === 'calibrate' && !values.images) throw new UsageError('--images LIST.json is required');
  const threads = Number(values.threads);
  if (!Number.isInteger(threads) || threads < 1) {
    throw new UsageError(`--threads must be an integer >= 1, found '${values.threads}'`);
  }

  if (values.method !== 'minmax' && values.method !== 'percentile') {
    throw new UsageError(`--method must be minmax or percentile, found '${values.method}'`);
  }
  const percentile = Number(values.percentile);
  if (!(percentile > 50 && percentile <= 100)) {
    throw new UsageError(`--percentile must be above 50 and at most 100, found '${values.percentile}'`);
  }
  if (!fs.existsSync(values.model)) throw new UsageError(`${values.model}: model file not found`);
  return {
    command, model: values.model, out: values.out, images: values.images, threads,
    method: values.method, percentile,
  };
}

async function optimize(ort, args) {
  const temp = path.join(path.dirname(args.out), `.${path.basename(args.out)}.${process.pid}.tmp`);
  try {
    await ort.InferenceSession.create(args.model, {
      executionProviders: ['cpu'],
      graphOptimizationLevel: 'basic',
      optimizedModelFilePath: temp,
      logSeverityLevel: 3,
    });
    fs.renameSync(temp, args.out);
  } catch (error) {
    fs.rmSync(temp, { force: true });
    throw error;
  }
}

function readImageList(file) {
  let list;
  try {
    list = JSON.parse(fs.readFileSync(file, 'utf8'));
  } catch (error) {
    throw new UsageError(`${file}: cannot read the image list: ${error.message}`);
  }
  if (!Array.isArray(list) || list.length === 0) throw new UsageError(`${file}: expected a non-empty JSON array`);
  return list;
}

function readImageTensor(ort, entry) {
  const { path: file, width, height } = entry;
  const rgb = fs.readFileSync(file);
  if (rgb.length !== width * height * 3) {
    throw new Error(`${file}: size is ${rgb.length} bytes, expected ${width * height * 3} (${width}x${height} RGB)`);
  }
  return new ort.Tensor('float32', rgbToChwFloat(rgb, width, height), [3, height, width]);
}

async function runOverImages(ort, session, images, names, label, visit) {
  const start = Date.now();
  for (let i = 0; i < images.length; ++i) {
    const outputs = await session.run({ [INPUT_NAME]: readImageTensor(ort, images[i]) }, names);
    for (const name of names) {
      visit(name, outputs[name].data);
      outputs[name].dispose();
    }
    if (process.stderr.isTTY) process.stderr.write(`\rort_calibrate: ${label}: ${i + 1}/${images.length} images`);
  }
  if (process.stderr.isTTY) process.stderr.write('\n');
  process.stderr.write(`ort_calibrate: ${label}: ${names.length} tensors over ${images.length} images ` +
                       `in ${((Date.now() - start) / 1000).toFixed(1)} s\n`);
}

function collectMinMax(ranges) {
  return (name, data) => {
    const range = ranges.get(name);
    let min = range.min;
    let max = range.max;
    for (let k = 0; k < data.length; ++k) {
      const value = data[k];
      if (value < min) min = value;
      if (value > max) max = value;
    }
    range.min = min;
    range.max = max;
  };
}

function collectHistograms(ranges, histograms) {
  return (name, data) => {
    const { min, max } = ranges.get(name);
    const counts = histograms.get(name);
    if (!(max > min)) return;
    const binsPerUnit = HISTOGRAM_BINS / (max - min);
    for (let k = 0; k < data.length; ++k) {
      const bin = Math.min(HISTOGRAM_BINS - 1, Math.floor((data[k] - min) * binsPerUnit));
      counts[bin] += 1;
    }
  };
}

// Return the [low, high] range that keeps the central `percentile` percent of the values,
// cutting (100 - percentile) / 2 percent from each tail at histogram bin edges.
function percentileRange(range, counts, percentile) {
  if (!(range.max > range.min)) return { min: range.min, max: range.max };
  let total = 0;
  for (const count of counts) total += count;
  const tail = total * (100 - percentile) / 200;
  const binWidth = (range.max - range.min) / HISTOGRAM_BINS;
  let low = 0;
  for (let seen = 0; low < HISTOGRAM_BINS - 1 && seen + counts[low] <= tail; ++low) seen += counts[low];
  let high = HISTOGRAM_BINS - 1;
  for (let seen = 0; high > low && seen + counts[high] <= tail; --high) seen += counts[high];
  return { min: range.min + low * binWidth, max: range.min + (high + 1) * binWidth };
}

async function calibrate(ort, args) {
  const images = readImageList(args.images);
  const session = await ort.InferenceSession.create(args.model, {
    executionProviders: ['cpu'],
    intraOpNumThreads: args.threads,
    interOpNumThreads: 1,
    executionMode: 'sequential',
    graphOptimizationLevel: 'basic',
    logSeverityLevel: 3,
  });
  const names = session.outputNames.filter((name) => !DETECTOR_OUTPUTS.has(name));
  if (names.length === 0) throw new UsageError(`${args.model}: the graph has no outputs to calibrate`);

  const ranges = new Map(names.map((name) => [name, { min: Infinity, max: -Infinity }]));
  await runOverImages(ort, session, images, names, 'min/max', collectMinMax(ranges));
  let calibrated = ranges;
  if (args.method === 'percentile') {
    // A second pass, because the histogram bins span the min/max range of the first.
    const histograms = new Map(names.map((name) => [name, new Float64Array(HISTOGRAM_BINS)]));
    await runOverImages(ort, session, images, names, 'histograms', collectHistograms(ranges, histograms));
    calibrated = new Map(names.map((name) => [name, percentileRange(ranges.get(name), histograms.get(name), args.percentile)]));
  }

  // A tensor that was empty on every image (for example RoI features when no image had a
  // proposal) has no range. JSON cannot hold an infinite value, so it is written as null.
  const tensors = {};
  for (const [name, range] of calibrated) {
    tensors[name] = Number.isFinite(range.min) ? { min: range.min, max: range.max } : null;
  }
  const temp = `${args.out}.${process.pid}.tmp`;
  fs.writeFileSync(temp, JSON.stringify({ images: images.length, method: args.method, tensors }, null, 1));
  fs.renameSync(temp, args.out);
  await session.release();
}

async function main() {
  const args = parseCommandLine(process.argv.slice(2));
  const ort = loadOnnxRuntime();
  if (args.command === 'optimize') await optimize(ort, args);
  else await calibrate(ort, args);
}

main().then(
  () => process.exit(0),
  (error) => {
    if (!(error instanceof UsageError)) process.stderr.write(`${error.stack || error}\n`);
    process.stderr.write(`ort_calibrate: error: ${error.message || error}\n`);
    process.exit(1);
  });
