// Pieces shared by ort_worker.js and ort_calibrate.js.
'use strict';

// Loads the onnxruntime-node package installed in this folder. When it is missing, throws an Error
// with the command that installs it.
function loadOnnxRuntime() {
  try {
    return require('onnxruntime-node');
  } catch (error) {
    throw new Error(
      `cannot load onnxruntime-node (${error.message}); run "npm ci --ignore-scripts" in ${__dirname}`);
  }
}

// Converts RGB uint8 HWC bytes into the float32 CHW values in [0, 1] that the exported graph takes.
function rgbToChwFloat(rgb, width, height) {
  const planeSize = width * height;
  const chw = new Float32Array(3 * planeSize);
  for (let pixel = 0, offset = 0; pixel < planeSize; ++pixel, offset += 3) {
    chw[pixel] = rgb[offset] / 255;
    chw[planeSize + pixel] = rgb[offset + 1] / 255;
    chw[2 * planeSize + pixel] = rgb[offset + 2] / 255;
  }
  return chw;
}

module.exports = { loadOnnxRuntime, rgbToChwFloat };
