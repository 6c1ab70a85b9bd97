// bp's web page: draw a digit, watch the network answer and its gradient.
//
// Everything here runs in the page from model.js (window.BP_MODEL) and
// sample.js (window.BP_SAMPLE), with no network. Four parts, each a copy of
// bp's Python that the browser tests hold to the original:
//   1. the network (bpcli/network.py): forward, output_delta, backward, cost;
//   2. the explanation of one example (bpcli/explain.py: zoom_in), in the
//      shape of `bp explain --json`;
//   3. the MNIST-style preparation of a picture (bpcli/image.py: prepare);
//   4. mini-batch SGD (bpcli/optim.py's SGD without momentum) on the embedded
//      sample, in a Web Worker that runs section 1's source.
// Then the page: drawing pad, preview, the network drawn live, backprop, and
// the Train panel.
//
// The math runs in float64 on float32 weights, like bp explain; training
// stores each updated weight as float32, as bp does.
// window.bp is the small API for tests and tinkerers (bottom of the file).

"use strict";

(function () {
  const M = window.BP_MODEL; // the exported model (model.js)
  const SAMPLE = window.BP_SAMPLE || null; // the Train panel's MNIST sample (sample.js), or null

  const decodeBytes = (b64) => Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));

  function decodeFloat32(b64) { // little-endian float32 -> Float32Array (exact)
    const view = new DataView(decodeBytes(b64).buffer);
    const out = new Float32Array(view.byteLength / 4);
    for (let i = 0; i < out.length; i++) out[i] = view.getFloat32(4 * i, true);
    return out;
  }

  // The page's network: the model's until the Train panel starts another (from scratch).
  // net describes it, params holds its weights (float64 copies: one SGD step on a
  // drawing moves them), math is section 1 for it.
  let net = { sizes: M.sizes, activation: M.activation, output: M.output, loss: M.loss, lr: M.lr };
  let sizes = net.sizes;
  let L = sizes.length - 1;
  let math = networkMath(net);
  const original = { Ws: M.W.map(decodeFloat32), bs: M.b.map(decodeFloat32) };
  let params = copyParams(original); // the page's weights: one SGD step at a time changes them

  function copyParams(p) {
    return { Ws: p.Ws.map((a) => Float64Array.from(a)), bs: p.bs.map((a) => Float64Array.from(a)) };
  }

  function useNetwork(spec, p) {
    net = spec;
    sizes = spec.sizes;
    L = sizes.length - 1;
    math = networkMath(spec);
    params = copyParams(p);
  }

  const forward = (p, x) => math.forward(p, x);
  const exampleCost = (A, Y) => math.exampleCost(A, Y);
  const outputDelta = (A, Y) => math.outputDelta(A, Y);
  const backward = (p, acts, Y) => math.backward(p, acts, Y);
  const argmax = (v) => math.argmax(v);
  const oneHot = (target) => math.oneHot(target, sizes[L]);

  // -------------------------------------------------------------------------
  // 1. The network (bpcli/network.py) for one example at a time, layers
  //    numbered as there: Ws[l] is W[l+1] with shape (fan_in, fan_out),
  //    row-major. Self-contained (no names from outside), because the Train
  //    panel's Web Worker runs this same source.
  function networkMath(spec) {
    const sizes = spec.sizes, L = sizes.length - 1;
    const LEAKY_SLOPE = 0.01;
    const TINY = 1e-12;
    const sigmoid = (z) => 0.5 * (1 + Math.tanh(0.5 * z)); // as network.sigmoid: tanh never overflows
    // name -> [f(z), f'(a)]: each derivative in terms of the activation a = f(z)
    const ACTIVATIONS = {
      sigmoid: [sigmoid, (a) => a * (1 - a)],
      tanh: [Math.tanh, (a) => 1 - a * a],
      relu: [(z) => Math.max(z, 0), (a) => (a > 0 ? 1 : 0)],
      leaky_relu: [(z) => (z > 0 ? z : LEAKY_SLOPE * z), (a) => (a > 0 ? 1 : LEAKY_SLOPE)],
    };
    const [f, fprime] = ACTIVATIONS[spec.activation];

    function softmax(z) {
      const top = Math.max(...z);
      const e = z.map((v) => Math.exp(v - top));
      const sum = e.reduce((s, v) => s + v, 0);
      return e.map((v) => v / sum);
    }

    // Feedforward: activations [a0 = x, a1, ..., aL], each a Float64Array.
    function forward(p, x) {
      const acts = [Float64Array.from(x)];
      let a = acts[0];
      for (let l = 0; l < L; l++) {
        const W = p.Ws[l], b = p.bs[l], m = sizes[l], n = sizes[l + 1];
        const z = Float64Array.from(b);
        for (let i = 0; i < m; i++) {
          const ai = a[i];
          if (ai === 0) continue; // most input pixels are 0
          const row = i * n;
          for (let j = 0; j < n; j++) z[j] += ai * W[row + j];
        }
        if (l < L - 1) a = z.map(f);
        else a = spec.output === "softmax" ? Float64Array.from(softmax(Array.from(z))) : z.map(sigmoid);
        acts.push(a);
      }
      return acts;
    }

    // C0, the cost of one example (network.example_costs)
    function exampleCost(A, Y) {
      let c = 0;
      for (let j = 0; j < A.length; j++) {
        if (spec.loss === "mse") c += (A[j] - Y[j]) ** 2;
        else if (spec.output === "softmax") c -= Y[j] * Math.log(A[j] + TINY);
        else c -= Y[j] * Math.log(A[j] + TINY) + (1 - Y[j]) * Math.log(1 - A[j] + TINY);
      }
      return c;
    }

    // -dC0/da(L): the change of each output activation this example wishes for
    // (the explanation's nudges; for the quadratic cost 2 (y - a))
    function outputWish(A, Y) {
      return Array.from(A, (a, j) => {
        if (spec.loss === "mse") return 2 * (Y[j] - a);
        if (spec.output === "softmax") return Y[j] / (a + TINY);
        return Y[j] / (a + TINY) - (1 - Y[j]) / (1 - a + TINY);
      });
    }

    // dC0/dz(L) for one example (network.output_delta with n = 1)
    function outputDelta(A, Y) {
      const k = A.length;
      const d = new Float64Array(k);
      if (spec.loss === "cross_entropy") {
        for (let j = 0; j < k; j++) d[j] = A[j] - Y[j]; // the log cancels the output's derivative
        return d;
      }
      for (let j = 0; j < k; j++) d[j] = 2 * (A[j] - Y[j]); // d/da of (a - y)^2
      if (spec.output === "sigmoid") {
        for (let j = 0; j < k; j++) d[j] *= A[j] * (1 - A[j]);
        return d;
      }
      let s = 0; // softmax Jacobian: da_j/dz_i = a_j (delta_ij - a_i)
      for (let j = 0; j < k; j++) s += d[j] * A[j];
      for (let j = 0; j < k; j++) d[j] = A[j] * (d[j] - s);
      return d;
    }

    function oneHot(target, k) {
      const Y = new Float64Array(k);
      Y[target] = 1;
      return Y;
    }

    function zeros() {
      const dWs = [], dbs = [];
      for (let l = 0; l < L; l++) { dWs.push(new Float64Array(sizes[l] * sizes[l + 1])); dbs.push(new Float64Array(sizes[l + 1])); }
      return { dWs, dbs };
    }

    // Backward pass (network.backward): dC0/dW, dC0/db for every layer, or, given
    // grads, scale * those added to it (a mini-batch's mean: scale = 1/n per example).
    function backward(p, acts, Y, grads = zeros(), scale = 1) {
      const { dWs, dbs } = grads;
      let delta = outputDelta(acts[L], Y);
      for (let l = L - 1; l >= 0; l--) {
        const m = sizes[l], n = sizes[l + 1], a = acts[l], W = p.Ws[l], dW = dWs[l], db = dbs[l];
        for (let j = 0; j < n; j++) db[j] += scale * delta[j];
        for (let i = 0; i < m; i++) {
          if (a[i] === 0) continue;
          const ai = scale * a[i], row = i * n;
          for (let j = 0; j < n; j++) dW[row + j] += ai * delta[j];
        }
        if (l > 0) {
          const below = new Float64Array(m); // pull delta back through W, then through f
          for (let i = 0; i < m; i++) {
            let s = 0;
            for (let j = 0; j < n; j++) s += W[i * n + j] * delta[j];
            below[i] = s * fprime(a[i]);
          }
          delta = below;
        }
      }
      return grads;
    }

    function argmax(v) {
      let best = 0;
      for (let i = 1; i < v.length; i++) if (v[i] > v[best]) best = i;
      return best;
    }

    return { forward, exampleCost, outputWish, outputDelta, oneHot, zeros, backward, argmax };
  }

  // Model.predict_proba: sigmoid outputs are normalised to sum to 1, as bp predict reports them.
  function probabilities(A) {
    if (net.output !== "sigmoid") return Array.from(A);
    const sum = Math.max(A.reduce((s, v) => s + v, 0), 1e-12);
    return Array.from(A, (v) => v / sum);
  }

  // -------------------------------------------------------------------------
  // 2. One example explained (explain.zoom_in): the document bp explain --json prints.

  const direction = (g) => (g < 0 ? "up" : g > 0 ? "down" : "none");

  // indices of the k largest |values|, largest first, ties lower index first (explain._top)
  function top(values, k) {
    const order = Array.from(values, (_, i) => i);
    order.sort((i, j) => Math.abs(values[j]) - Math.abs(values[i]) || i - j);
    return order.slice(0, k);
  }

  function explain(p, x, target, topK, label) {
    const acts = forward(p, x);
    const A = acts[L];
    const predicted = argmax(A);
    let why = "flag";
    if (target === undefined || target === null) {
      [target, why] = label === undefined || label === null ? [predicted, "prediction"] : [label, "label"];
    }
    const k = sizes[L];
    if (!Number.isInteger(target) || target < 0 || target >= k) throw new RangeError(`target must be a digit from 0 to ${k - 1}`);
    const Y = oneHot(target);
    const delta = outputDelta(A, Y);
    const C0 = exampleCost(A, Y);
    const aPrev = acts[L - 1], W = p.Ws[L - 1], j = target, m = sizes[L - 1];
    const gw = new Float64Array(m), wish = new Float64Array(m), total = new Float64Array(m), wj = new Float64Array(m);
    for (let i = 0; i < m; i++) {
      wj[i] = W[i * k + j];
      gw[i] = aPrev[i] * delta[j]; // dC0/dw = a(L-1) * dC0/dz
      wish[i] = wj[i] * delta[j]; // what neuron j alone wants of a(L-1)
      let s = 0;
      for (let q = 0; q < k; q++) s += W[i * k + q] * delta[q];
      total[i] = s; // all k output neurons' wishes, added up
    }
    const output_layer = {
      activations: Array.from(A),
      desired: Array.from(Y),
      dC0_dz: Array.from(delta),
      directions: Array.from(delta, direction),
      cost: C0,
      predicted,
    };
    const zoom_in = {
      layer: L,
      neuron: j,
      activation: A[j],
      desired: 1.0,
      dC0_dz: delta[j],
      previous_layer: L - 1,
      fan_in: m,
      bias: { value: p.bs[L - 1][j], gradient: delta[j], direction: direction(delta[j]) },
      weights: top(gw, topK).map((i) => ({
        from: i, activation: aPrev[i], weight: wj[i], gradient: gw[i], direction: direction(gw[i]),
      })),
      previous_activations: top(wish, topK).map((i) => ({
        neuron: i, activation: aPrev[i], weight: wj[i], gradient: wish[i],
        gradient_all_outputs: total[i], direction: direction(wish[i]),
      })),
    };
    return {
      dataset: M.dataset,
      classes: M.classes.slice(),
      checkpoint: M.checkpoint,
      input: { source: "page" },
      model: { sizes: sizes.slice(), activation: net.activation, output: net.output, loss: net.loss },
      label: label === undefined ? null : label,
      predicted,
      target,
      target_from: why,
      output_layer,
      zoom_in,
      zoom_out: null, // needs a mini-batch of MNIST images, which the page does not have
    };
  }

  // One plain SGD step on one example: w <- w - lr dC0/dw (as explain's zoom-out step).
  function sgdStep(p, x, target, lr) {
    const acts = forward(p, x);
    const { dWs, dbs } = backward(p, acts, oneHot(target));
    for (let l = 0; l < L; l++) {
      for (let i = 0; i < dWs[l].length; i++) p.Ws[l][i] -= lr * dWs[l][i];
      for (let i = 0; i < dbs[l].length; i++) p.bs[l][i] -= lr * dbs[l][i];
    }
  }

  // -------------------------------------------------------------------------
  // 3. Preparing a picture like MNIST (image.prepare), for a clean picture
  //    such as the pad's: uniform paper, no noise, no specks. On such a picture
  //    prepare's background map is a constant (the paper's level), and its
  //    speck removal keeps everything (every stroke is the user's), so what
  //    remains is: polarity, paper level, blur, soft threshold, crop, fit
  //    into 20x20 (thickening hairlines), centre of mass.
  //    Pillow's resampling (BOX when shrinking, BILINEAR when enlarging) is
  //    reproduced exactly, so the page's 28x28 is bp predict's.

  const FIELD = 28, BOX = 20, FINE = 4 * BOX;
  const STROKE_WIDTH = 1.8, MIN_STROKE_WIDTH = 1.0, MIN_DIGIT_SIZE = 8;
  const f32 = Math.fround;

  // Python's round(): halves go to the even neighbour
  function roundHalfEven(v) {
    const r = Math.round(v);
    return Math.abs(v % 1) === 0.5 && r % 2 !== 0 ? r - 1 : r;
  }

  class Gray { // a float32 picture, row-major
    constructor(w, h, data) { this.w = w; this.h = h; this.data = data || new Float32Array(w * h); }
    at(x, y) { return this.data[y * this.w + x]; }
  }

  function blur(g) { // separable [1, 2, 1] / 4, edges replicated (image._blur)
    const { w, h } = g, v = new Gray(w, h), out = new Gray(w, h);
    for (let y = 0; y < h; y++) {
      const up = Math.max(y - 1, 0), down = Math.min(y + 1, h - 1);
      for (let x = 0; x < w; x++) v.data[y * w + x] = f32((g.at(x, up) + 2 * g.at(x, y) + g.at(x, down)) * 0.25);
    }
    for (let y = 0; y < h; y++) {
      for (let x = 0; x < w; x++) {
        const left = Math.max(x - 1, 0), right = Math.min(x + 1, w - 1);
        out.data[y * w + x] = f32((v.at(left, y) + 2 * v.at(x, y) + v.at(right, y)) * 0.25);
      }
    }
    return out;
  }

  function border(g) { // a thin frame: 2 % of the size, at least 1 px (image._border)
    const k = Math.max(1, Math.floor(Math.min(g.w, g.h) / 50)), out = [];
    for (let y = 0; y < g.h; y++) {
      for (let x = 0; x < g.w; x++) {
        if (y < k || y >= g.h - k || x < k || x >= g.w - k) out.push(g.at(x, y));
      }
    }
    return out;
  }

  function sample(g, n = 16000) { // image._sample: a regular subsample
    const step = Math.max(1, Math.ceil(Math.sqrt((g.w * g.h) / n))), out = [];
    for (let y = 0; y < g.h; y += step) for (let x = 0; x < g.w; x += step) out.push(g.at(x, y));
    return out;
  }

  function percentile(values, q) { // numpy's default (linear) percentile
    const v = Float64Array.from(values).sort();
    const pos = (q / 100) * (v.length - 1), lo = Math.floor(pos), hi = Math.min(lo + 1, v.length - 1);
    return v[lo] + (v[hi] - v[lo]) * (pos - lo);
  }

  const median = (values) => percentile(values, 50);
  function mad(values) {
    const m = median(values);
    return median(values.map((v) => Math.abs(v - m)));
  }

  // Pillow's resampling of a float image: BOX or BILINEAR, horizontal then vertical pass.
  const FILTERS = {
    box: { support: 0.5, f: (x) => (x > -0.5 && x <= 0.5 ? 1 : 0) },
    bilinear: { support: 1.0, f: (x) => { x = Math.abs(x); return x < 1 ? 1 - x : 0; } },
  };

  function coefficients(inSize, outSize, filter) {
    const scale = inSize / outSize, filterscale = Math.max(scale, 1);
    const support = filter.support * filterscale, ss = 1 / filterscale, rows = [];
    for (let xx = 0; xx < outSize; xx++) {
      const center = (xx + 0.5) * scale;
      const xmin = Math.max(Math.trunc(center - support + 0.5), 0);
      const xmax = Math.min(Math.trunc(center + support + 0.5), inSize);
      const k = [];
      let ww = 0;
      for (let x = xmin; x < xmax; x++) { const w = filter.f((x - center + 0.5) * ss); k.push(w); ww += w; }
      rows.push({ xmin, k: ww !== 0 ? k.map((w) => w / ww) : k });
    }
    return rows;
  }

  function resize(g, w, h, shrinking) {
    const filter = shrinking ? FILTERS.box : FILTERS.bilinear;
    let cur = g;
    if (w !== g.w) {
      const cs = coefficients(g.w, w, filter), out = new Gray(w, g.h);
      for (let y = 0; y < g.h; y++) {
        for (let x = 0; x < w; x++) {
          let s = 0;
          const { xmin, k } = cs[x];
          for (let i = 0; i < k.length; i++) s += g.at(xmin + i, y) * k[i];
          out.data[y * w + x] = f32(s);
        }
      }
      cur = out;
    }
    if (h !== cur.h) {
      const cs = coefficients(cur.h, h, filter), out = new Gray(cur.w, h);
      for (let y = 0; y < h; y++) {
        const { xmin, k } = cs[y];
        for (let x = 0; x < cur.w; x++) {
          let s = 0;
          for (let i = 0; i < k.length; i++) s += cur.at(x, xmin + i) * k[i];
          out.data[y * cur.w + x] = f32(s);
        }
      }
      cur = out;
    }
    return cur;
  }

  function bbox(g, test) { // [r0, r1, c0, c1] of the pixels passing test, end-exclusive, or null
    let r0 = g.h, r1 = -1, c0 = g.w, c1 = -1;
    for (let y = 0; y < g.h; y++) {
      for (let x = 0; x < g.w; x++) {
        if (test(g.at(x, y))) { r0 = Math.min(r0, y); r1 = Math.max(r1, y); c0 = Math.min(c0, x); c1 = Math.max(c1, x); }
      }
    }
    return r1 < 0 ? null : [r0, r1 + 1, c0, c1 + 1];
  }

  function crop(g, [r0, r1, c0, c1]) {
    const out = new Gray(c1 - c0, r1 - r0);
    for (let y = r0; y < r1; y++) for (let x = c0; x < c1; x++) out.data[(y - r0) * out.w + x - c0] = g.at(x, y);
    return out;
  }

  function pad(g, r) {
    const out = new Gray(g.w + 2 * r, g.h + 2 * r);
    for (let y = 0; y < g.h; y++) for (let x = 0; x < g.w; x++) out.data[(y + r) * out.w + x + r] = g.at(x, y);
    return out;
  }

  function strokeWidth(g) { // 2 * area / perimeter of the ink > 0.5 (image._stroke_width)
    const inked = (x, y) => x >= 0 && y >= 0 && x < g.w && y < g.h && g.at(x, y) > 0.5;
    let area = 0, perimeter = 0;
    for (let y = -1; y < g.h; y++) {
      for (let x = -1; x < g.w; x++) {
        if (inked(x, y)) area++;
        if (x >= 0 && inked(x, y) !== inked(x, y + 1)) perimeter++;
        if (y >= 0 && inked(x, y) !== inked(x + 1, y)) perimeter++;
      }
    }
    return area === 0 ? 0 : (2 * area) / perimeter;
  }

  function dilate(g, radius) { // octagon max filter: 3x3 squares alternating with crosses
    const square = [[-1, -1], [0, -1], [1, -1], [-1, 0], [0, 0], [1, 0], [-1, 1], [0, 1], [1, 1]];
    const cross = [[0, 0], [0, -1], [0, 1], [-1, 0], [1, 0]];
    for (let step = 0; step < radius; step++) {
      const offsets = step % 2 === 0 ? square : cross, out = new Gray(g.w, g.h);
      for (let y = 0; y < g.h; y++) {
        for (let x = 0; x < g.w; x++) {
          let m = -Infinity;
          for (const [dx, dy] of offsets) {
            const xx = x + dx, yy = y + dy;
            m = Math.max(m, xx >= 0 && yy >= 0 && xx < g.w && yy < g.h ? g.at(xx, yy) : 0);
          }
          out.data[y * g.w + x] = m;
        }
      }
      g = out;
    }
    return g;
  }

  function normaliseSize(c) { // image._normalise_size: the longer side BOX px, max 1
    let longer = Math.max(c.w, c.h);
    let fine = resize(c, Math.max(1, roundHalfEven((c.w * FINE) / longer)),
      Math.max(1, roundHalfEven((c.h * FINE) / longer)), longer > FINE);
    const width = strokeWidth(fine) / (FINE / BOX);
    if (width > 0 && width < MIN_STROKE_WIDTH) {
      const radius = Math.max(1, roundHalfEven(((STROKE_WIDTH - width) * (FINE / BOX)) / 2));
      fine = dilate(pad(fine, radius), radius);
      c = crop(fine, bbox(fine, (v) => v > 0));
    } else if (longer > FINE) {
      c = fine;
    }
    longer = Math.max(c.w, c.h);
    const digit = resize(c, Math.max(1, roundHalfEven((c.w * BOX) / longer)),
      Math.max(1, roundHalfEven((c.h * BOX) / longer)), longer >= BOX);
    let peak = 0;
    for (const v of digit.data) peak = Math.max(peak, v);
    if (peak > 0) for (let i = 0; i < digit.data.length; i++) digit.data[i] = Math.min(Math.max(f32(digit.data[i] / peak), 0), 1);
    return digit;
  }

  function centre(digit) { // image._centre: centre of mass at (14, 14); -> 784 uint8
    let total = 0, rows = 0, cols = 0;
    for (let y = 0; y < digit.h; y++) {
      for (let x = 0; x < digit.w; x++) { const v = digit.at(x, y); total += v; rows += v * y; cols += v * x; }
    }
    const topRow = Math.min(Math.max(roundHalfEven(FIELD / 2 - rows / total), 0), FIELD - digit.h);
    const left = Math.min(Math.max(roundHalfEven(FIELD / 2 - cols / total), 0), FIELD - digit.w);
    const out = new Uint8Array(FIELD * FIELD);
    for (let y = 0; y < digit.h; y++) {
      for (let x = 0; x < digit.w; x++) out[(topRow + y) * FIELD + left + x] = roundHalfEven(f32(digit.at(x, y) * 255));
    }
    return out;
  }

  // grey (w*h values in [0, 1], 1 = white), either polarity -> 784 uint8 (ink 255), or null: no digit
  function prepareGray(values, w, h) {
    let g = new Gray(w, h, Float32Array.from(values));
    let b = blur(g);
    const paper = median(border(g));
    let lo = Infinity, hi = -Infinity;
    for (const v of b.data) { lo = Math.min(lo, v); hi = Math.max(hi, v); }
    if (paper - lo > hi - paper) { // dark ink: turn it light on dark (image._light_ink)
      g = new Gray(w, h, g.data.map((v) => 1 - v));
      b = new Gray(w, h, b.data.map((v) => 1 - v));
    }
    // the background: on uniform paper the plane prepare fits to the border is its level
    const level0 = median(border(b));
    g = new Gray(w, h, g.data.map((v) => f32(v - level0)));
    b = new Gray(w, h, b.data.map((v) => f32(v - level0)));
    let peak = -Infinity;
    for (const v of b.data) peak = Math.max(peak, v);
    const sigma = 1.4826 * Math.min(mad(sample(b)), mad(border(b)));
    if (peak < 0.08 || peak < 8 * sigma) return null;
    const core = Array.from(b.data).filter((v) => v > 0.5 * peak);
    const level = core.length ? percentile(core, 75) : peak;
    const src = Math.max(w, h) >= 128 ? b : g; // blur only where it cannot hurt
    const thresh = Math.min(0.5, Math.max(0.1, (5 * sigma) / level));
    const ink = new Gray(w, h, src.data.map((v) => Math.min(Math.max((v / level - thresh) / (1 - thresh), 0), 1)));
    const box = bbox(ink, (v) => v > 0);
    if (box === null || Math.max(box[1] - box[0], box[3] - box[2]) < MIN_DIGIT_SIZE) return null;
    return centre(normaliseSize(crop(ink, box)));
  }

  // -------------------------------------------------------------------------
  // The page

  const $ = (id) => document.getElementById(id);
  const BLUE = "#2f6fdf", RED = "#d8402f";
  const signColour = (v) => (v >= 0 ? BLUE : RED);
  const fmt = (v) => (v === 0 || Math.abs(v) >= 5e-4 ? v.toFixed(4) : v.toExponential(2)); // as bp explain prints
  const WIDE = 32; // layers up to this many units are drawn whole
  const SHOWN = 12; // of a wider layer, the most active ones
  const PEN = 18; // stroke width on the 280 px pad, like a pen on paper (MNIST: 1/10 of the digit's height)

  const state = {
    input: null, // the prepared 784 inputs in [0, 1], or null while the pad is blank
    pinnedTarget: null, // the digit the user picked, or null: follow the prediction
    costs: [], // C0 after each SGD step since the last change
  };

  const padCanvas = $("pad");
  const padCtx = padCanvas.getContext("2d", { willReadFrequently: true });

  let padDirty = true;
  function clearPad() {
    padDirty = true;
    padCtx.fillStyle = "#ffffff";
    padCtx.fillRect(0, 0, padCanvas.width, padCanvas.height);
    state.pinnedTarget = null;
    state.costs = [];
    update();
  }

  function padInput() {
    const { width: w, height: h } = padCanvas;
    const rgba = padCtx.getImageData(0, 0, w, h).data;
    const grey = new Float32Array(w * h);
    for (let i = 0; i < w * h; i++) grey[i] = rgba[4 * i] / 255; // the pad is grey: R = G = B
    const u8 = prepareGray(grey, w, h);
    return u8 && Array.from(u8, (v) => v / 255);
  }

  // Drawing: Pointer Events cover mouse, touch and pen alike.
  let last = null, dirty = false;
  function padPoint(e) {
    const r = padCanvas.getBoundingClientRect();
    return { x: ((e.clientX - r.left) * padCanvas.width) / r.width, y: ((e.clientY - r.top) * padCanvas.height) / r.height,
      w: e.pointerType === "pen" ? PEN * (0.6 + 0.8 * e.pressure) : PEN };
  }
  function stroke(from, to) {
    padDirty = true;
    padCtx.strokeStyle = "#111";
    padCtx.lineCap = "round";
    padCtx.lineJoin = "round";
    padCtx.lineWidth = (from.w + to.w) / 2;
    padCtx.beginPath();
    padCtx.moveTo(from.x, from.y);
    padCtx.lineTo(to.x, to.y);
    padCtx.stroke();
  }
  function scheduleUpdate() {
    if (!dirty) { dirty = true; requestAnimationFrame(() => { dirty = false; update(); }); }
  }
  padCanvas.addEventListener("pointerdown", (e) => {
    e.preventDefault();
    padCanvas.setPointerCapture(e.pointerId);
    last = padPoint(e);
    stroke(last, last);
    state.costs = [];
    scheduleUpdate();
  });
  padCanvas.addEventListener("pointermove", (e) => {
    if (last === null) return;
    const events = e.getCoalescedEvents ? e.getCoalescedEvents() : [e];
    for (const ev of events.length ? events : [e]) { const p = padPoint(ev); stroke(last, p); last = p; }
    scheduleUpdate();
  });
  const end = () => { last = null; scheduleUpdate(); };
  padCanvas.addEventListener("pointerup", end);
  padCanvas.addEventListener("pointercancel", end);

  // --- what the page shows ---

  function currentTarget(predicted) {
    return state.pinnedTarget === null ? predicted : state.pinnedTarget;
  }

  function update() {
    if (padDirty) { // the training redraws often: prepare the pad only when it changed
      state.input = padInput();
      padDirty = false;
    }
    const x = state.input || new Array(784).fill(0);
    const acts = forward(params, x);
    const P = probabilities(acts[L]);
    const predicted = argmax(acts[L]);
    const target = currentTarget(predicted);
    const doc = explain(params, x, target, 5);
    drawPreview(x);
    showAnswer(P, predicted);
    drawNetwork(acts, P, doc);
    showBackprop(doc);
    document.body.dataset.ready = "1";
  }

  function drawPreview(x) {
    const c = $("preview").getContext("2d"), img = c.createImageData(28, 28);
    for (let i = 0; i < 784; i++) {
      const v = Math.round(x[i] * 255);
      img.data.set([v, v, v, 255], 4 * i);
    }
    c.putImageData(img, 0, 0);
  }

  function showAnswer(P, predicted) {
    if (state.input === null) {
      $("digit").textContent = "?";
      $("confidence").textContent = "draw a digit on the pad";
      return;
    }
    $("digit").textContent = String(predicted);
    $("confidence").textContent = `${(100 * P[predicted]).toFixed(1)} % sure`;
  }

  // Which units of a layer to draw: all of a small layer, the most active of a wide one.
  function shownUnits(a) {
    const all = Array.from(a, (_, i) => i);
    if (a.length <= WIDE) return all;
    return all.sort((i, j) => a[j] - a[i] || i - j).slice(0, SHOWN).sort((i, j) => i - j);
  }

  function brightness(a, layerMax) { // neuron brightness: the activation, relative for unbounded ones
    const v = layerMax > 1 ? a / layerMax : a;
    return Math.min(Math.max(v, 0), 1);
  }

  function arrow(ctx, x, y, g, scale, maxLen) { // an up (blue) or down (red) arrow of length |g| / scale
    if (!(scale > 0) || g === 0) return;
    const len = Math.max(4, (Math.abs(g) / scale) * maxLen), up = g < 0, dir = up ? -1 : 1;
    ctx.strokeStyle = ctx.fillStyle = up ? BLUE : RED;
    ctx.lineWidth = 3;
    ctx.beginPath();
    ctx.moveTo(x, y - (dir * len) / 2);
    ctx.lineTo(x, y + (dir * len) / 2 - dir * 5);
    ctx.stroke();
    ctx.beginPath();
    ctx.moveTo(x - 6, y + (dir * len) / 2 - dir * 7);
    ctx.lineTo(x + 6, y + (dir * len) / 2 - dir * 7);
    ctx.lineTo(x, y + (dir * len) / 2 + dir * 2);
    ctx.closePath();
    ctx.fill();
  }

  function neuron(ctx, x, y, r, light, ring) {
    const v = Math.round(light * 255);
    ctx.fillStyle = `rgb(${v},${v},${v})`;
    ctx.beginPath();
    ctx.arc(x, y, r, 0, 2 * Math.PI);
    ctx.fill();
    ctx.lineWidth = ring ? 3 : 1;
    ctx.strokeStyle = ring ? "#f0a020" : "#888";
    ctx.stroke();
  }

  function drawNetwork(acts, P, doc) {
    const canvas = $("net"), ctx = canvas.getContext("2d"), W = canvas.width, H = canvas.height;
    ctx.clearRect(0, 0, W, H);
    ctx.font = "13px system-ui, sans-serif";
    ctx.textAlign = "center";
    const topY = 46, bottom = H - 30;
    // the input layer is the 28x28 image itself; then one column per layer
    const tile = 6, imgX = 20, imgY = (topY + bottom) / 2 - 14 * tile;
    const colX = (l) => 240 + ((l - 1) * (W - 240 - 260)) / (L - 1);
    const layout = [null];
    for (let l = 1; l <= L; l++) {
      const units = shownUnits(acts[l]);
      const step = Math.min(34, (bottom - topY) / units.length);
      const y0 = (topY + bottom) / 2 - (step * (units.length - 1)) / 2;
      const pos = new Map(units.map((u, i) => [u, y0 + i * step]));
      const layerMax = Math.max(...acts[l]);
      layout.push({ units, pos, r: Math.max(3, Math.min(11, step * 0.38)), x: colX(l), layerMax });
    }
    // connections, coloured by weight sign, drawn by magnitude
    ctx.lineCap = "round";
    for (let l = 1; l <= L; l++) {
      const Wl = params.Ws[l - 1], n = sizes[l], cur = layout[l];
      if (l === 1) { // from the input image: the three pixels that push each neuron hardest
        const lines = [];
        for (const u of cur.units) {
          const contrib = Array.from({ length: 784 }, (_, i) => acts[0][i] * Wl[i * n + u]);
          for (const i of top3(contrib)) if (contrib[i] !== 0) lines.push([i, u, Wl[i * n + u]]);
        }
        const wmax = Math.max(1e-12, ...lines.map((t) => Math.abs(t[2])));
        for (const [i, u, w] of lines) {
          line(ctx, imgX + (i % 28 + 0.5) * tile, imgY + (Math.floor(i / 28) + 0.5) * tile, cur.x, cur.pos.get(u), w, wmax, 1);
        }
        continue;
      }
      const prev = layout[l - 1];
      let wmax = 1e-12;
      for (const i of prev.units) for (const u of cur.units) wmax = Math.max(wmax, Math.abs(Wl[i * n + u]));
      for (const i of prev.units) {
        const a = brightness(acts[l - 1][i], prev.layerMax);
        for (const u of cur.units) line(ctx, prev.x, prev.pos.get(i), cur.x, cur.pos.get(u), Wl[i * n + u], wmax, 0.25 + 0.75 * a);
      }
    }
    // the input image
    for (let i = 0; i < 784; i++) {
      const v = Math.round(acts[0][i] * 255);
      ctx.fillStyle = `rgb(${v},${v},${v})`;
      ctx.fillRect(imgX + (i % 28) * tile, imgY + Math.floor(i / 28) * tile, tile, tile);
    }
    ctx.strokeStyle = "#888";
    ctx.lineWidth = 1;
    ctx.strokeRect(imgX, imgY, 28 * tile, 28 * tile);
    ctx.fillStyle = "#222";
    ctx.fillText("input: 784 pixels", imgX + 14 * tile, topY - 16);
    // neurons
    const target = doc.target, delta = doc.output_layer.dC0_dz;
    const dmax = Math.max(...delta.map(Math.abs));
    for (let l = 1; l <= L; l++) {
      const c = layout[l];
      ctx.fillStyle = "#222";
      ctx.textAlign = "center";
      const name = l === L ? `output: ${sizes[l]}` : `hidden ${l}: ${sizes[l]} neurons`;
      ctx.fillText(name, c.x, topY - 16);
      for (const u of c.units) neuron(ctx, c.x, c.pos.get(u), c.r, brightness(acts[l][u], c.layerMax), l === L && u === target);
      if (c.units.length < sizes[l]) {
        ctx.fillStyle = "#555";
        ctx.fillText(`the ${c.units.length} most active;`, c.x, bottom + 6);
        ctx.fillText(`+ ${sizes[l] - c.units.length} more`, c.x, bottom + 22);
      }
    }
    // outputs: digit, wished nudge (arrow), probability bar
    const out = layout[L];
    for (const u of out.units) {
      const y = out.pos.get(u);
      ctx.textAlign = "right";
      ctx.fillStyle = u === target ? "#b06000" : "#222";
      ctx.font = u === target ? "bold 15px system-ui, sans-serif" : "14px system-ui, sans-serif";
      ctx.fillText(String(u), out.x + 30, y + 5);
      if (state.input !== null) arrow(ctx, out.x + 46, y, delta[u], dmax, 28);
      const barX = out.x + 62, barW = 130;
      ctx.fillStyle = "#e6e6e6";
      ctx.fillRect(barX, y - 7, barW, 14);
      ctx.fillStyle = u === argmax(P) ? "#3a3a3a" : "#8a8a8a";
      ctx.fillRect(barX, y - 7, barW * P[u], 14);
      ctx.fillStyle = "#222";
      ctx.textAlign = "left";
      ctx.font = "13px system-ui, sans-serif";
      ctx.fillText(`${(100 * P[u]).toFixed(1)} %`, barX + barW + 6, y + 5);
    }
    ctx.textAlign = "left";
    ctx.fillStyle = "#555";
    ctx.fillText("probability", out.x + 62, topY - 16);
  }

  function top3(values) {
    return top(values, 3);
  }

  function line(ctx, x0, y0, x1, y1, w, wmax, strength) {
    const m = Math.abs(w) / wmax;
    ctx.strokeStyle = signColour(w);
    ctx.globalAlpha = Math.min(1, (0.08 + 0.6 * m) * strength);
    ctx.lineWidth = 0.4 + 3 * m;
    ctx.beginPath();
    ctx.moveTo(x0, y0);
    ctx.lineTo(x1, y1);
    ctx.stroke();
    ctx.globalAlpha = 1;
  }

  // --- backprop: the target, C0, the three levers of the target neuron ---

  function costFormula() {
    if (net.loss === "mse") return "C0 = Σ (a − y)²";
    if (net.output === "softmax") return "C0 = −log a(target)";
    return "C0 = −Σ [y log a + (1 − y) log(1 − a)]";
  }

  function showBackprop(doc) {
    document.querySelectorAll("#targets button").forEach((b) => {
      b.classList.toggle("chosen", Number(b.dataset.digit) === doc.target);
      b.classList.toggle("predicted", Number(b.dataset.digit) === doc.predicted);
    });
    $("target-why").textContent = state.pinnedTarget === null ? "(the prediction; click a digit to choose another)" : "(your choice)";
    const out = doc.output_layer;
    $("cost").textContent = `${costFormula()} = ${fmt(out.cost)}`;
    const wants = out.directions.map((d, j) => `${j}${d === "up" ? "↑" : d === "down" ? "↓" : "·"}`).join("  ");
    $("nudges").textContent = `each output's wished nudge (−dC0/dz): ${wants}`;
    $("step").disabled = state.input === null;
    $("step-log").textContent = state.costs.length ? `C0 after each step: ${state.costs.map(fmt).join(" → ")}` : "";
    drawZoom(doc);
    levers(doc);
  }

  function drawZoom(doc) {
    const canvas = $("zoom"), ctx = canvas.getContext("2d"), W = canvas.width, H = canvas.height;
    ctx.clearRect(0, 0, W, H);
    ctx.font = "13px system-ui, sans-serif";
    const z = doc.zoom_in, rows = z.weights;
    if (state.input === null) {
      ctx.fillStyle = "#666";
      ctx.textAlign = "center";
      ctx.fillText("Draw a digit: its gradient appears here.", W / 2, H / 2);
      return;
    }
    const prev = sizes[L - 1], k = sizes[L], Wl = params.Ws[L - 1];
    const wish = (i) => Wl[i * k + z.neuron] * z.dC0_dz;
    // one scale for every arrow in the picture, so their lengths compare
    const scale = Math.max(Math.abs(z.bias.gradient), ...rows.map((r) => Math.abs(r.gradient)), ...rows.map((r) => Math.abs(wish(r.from))));
    const tx = W - 230, ty = H / 2, tr = 30, sx = 250;
    const ys = rows.map((_, i) => 90 + (i * (H - 130)) / Math.max(1, rows.length - 1));
    const prevMax = Math.max(...rows.map((r) => r.activation), 1);
    const wmax = Math.max(...rows.map((r) => Math.abs(r.weight)), 1e-12);
    rows.forEach((r, i) => {
      line(ctx, sx, ys[i], tx, ty, r.weight, wmax, 1.6);
      // lever 2: the weight, its arrow on the line
      const mx = sx + 0.3 * (tx - sx), my = ys[i] + 0.3 * (ty - ys[i]);
      arrow(ctx, mx, my, r.gradient, scale, 50);
      ctx.fillStyle = "#222";
      ctx.textAlign = "left";
      ctx.fillText(`w = ${r.weight.toFixed(3)}   ∂C0/∂w = ${fmt(r.gradient)}`, mx + 16, my + 5);
      // lever 3: the previous activation, its arrow beside the neuron
      neuron(ctx, sx, ys[i], 14, brightness(r.activation, prevMax), false);
      arrow(ctx, sx - 34, ys[i], wish(r.from), scale, 50);
      ctx.fillStyle = "#222";
      ctx.textAlign = "right";
      ctx.fillText(`neuron ${r.from}: a = ${r.activation.toFixed(3)}`, sx - 50, ys[i] - 2);
      ctx.fillStyle = "#555";
      ctx.fillText(`∂C0/∂a = ${fmt(wish(r.from))}`, sx - 50, ys[i] + 14);
    });
    // the target neuron, lever 1: its bias
    neuron(ctx, tx, ty, tr, z.activation, true);
    arrow(ctx, tx + tr + 24, ty, z.bias.gradient, scale, 50);
    ctx.fillStyle = "#222";
    ctx.textAlign = "left";
    ctx.font = "bold 14px system-ui, sans-serif";
    ctx.fillText(`output ${z.neuron}`, tx - tr, ty - tr - 30);
    ctx.font = "13px system-ui, sans-serif";
    ctx.fillText(`a = ${z.activation.toFixed(4)}, wants 1`, tx - tr, ty - tr - 12);
    ctx.fillText(`bias b = ${z.bias.value.toFixed(3)}`, tx + tr + 40, ty - 4);
    ctx.fillText(`∂C0/∂b = ${fmt(z.bias.gradient)}`, tx + tr + 40, ty + 14);
    ctx.fillStyle = "#555";
    ctx.fillText(`∂C0/∂z = ${fmt(z.dC0_dz)}`, tx - tr, ty + tr + 24);
    // the three levers, named over their arrows
    ctx.fillStyle = "#222";
    ctx.font = "bold 14px system-ui, sans-serif";
    ctx.textAlign = "center";
    ctx.fillText("3. activations feeding it", sx - 90, 24);
    ctx.fillText("2. its weights", sx + 0.3 * (tx - sx) + 60, 24);
    ctx.fillText("1. its bias", tx + tr + 80, 24);
    ctx.font = "13px system-ui, sans-serif";
    ctx.fillStyle = "#555";
    ctx.fillText(`(layer ${L - 1}: the ${rows.length} of ${prev} neurons whose weights have the largest |∂C0/∂w| = a·|∂C0/∂z|)`,
      sx + 0.3 * (tx - sx), 44);
  }

  function levers(doc) {
    const z = doc.zoom_in, body = $("lever-rows");
    body.textContent = "";
    const arrowText = (d) => (d === "up" ? "↑ increase" : d === "down" ? "↓ decrease" : "· stay");
    const add = (cells, d) => {
      const tr = document.createElement("tr");
      for (const c of cells) { const td = document.createElement("td"); td.textContent = c; tr.appendChild(td); }
      const td = document.createElement("td");
      td.textContent = arrowText(d);
      td.className = d;
      tr.appendChild(td);
      body.appendChild(tr);
    };
    if (state.input === null) return;
    add(["bias", `b = ${z.bias.value.toFixed(4)}`, fmt(z.bias.gradient)], z.bias.direction);
    for (const r of z.weights) add([`weight from neuron ${r.from}`, `w = ${r.weight.toFixed(4)}, a = ${r.activation.toFixed(4)}`, fmt(r.gradient)], r.direction);
    for (const r of z.previous_activations) {
      add([`activation of neuron ${r.neuron}`, `a = ${r.activation.toFixed(4)}, all outputs: ${fmt(r.gradient_all_outputs)}`, fmt(r.gradient)], r.direction);
    }
  }

  function step() {
    if (state.input === null) return;
    const target = currentTarget(argmax(forward(params, state.input)[L]));
    const before = explain(params, state.input, target, 5).output_layer.cost;
    sgdStep(params, state.input, target, net.lr);
    const after = explain(params, state.input, target, 5).output_layer.cost;
    state.costs = state.costs.length ? [...state.costs, after] : [before, after];
    state.pinnedTarget = target; // the step was for this digit: keep it while stepping
    update();
  }

  function resetWeights() { // back to the training network's weights (the model's before any training)
    params = copyParams(trainer && trainer.params ? trainer.params : original);
    state.costs = [];
    update();
  }

  // --- wiring ---

  function modelLine() {
    const parts = [`${sizes.join("-")} network`, `${net.activation} hidden neurons`, `${net.output} outputs`,
      `${net.loss === "mse" ? "quadratic cost" : "cross-entropy"}`];
    if (trainer && trainer.snapshot && trainer.from === "scratch") parts.push(`trained here from scratch (seed ${trainer.seed})`);
    else if (M.checkpoint) parts.push(`from ${M.checkpoint}${M.epoch ? ` (epoch ${M.epoch})` : ""}`);
    if (trainer && trainer.snapshot && trainer.snapshot.step > 0) parts.push(`${trainer.snapshot.step} steps in the page`);
    return parts.join(", ");
  }

  $("clear").addEventListener("click", clearPad);
  $("step").addEventListener("click", step);
  $("reset").addEventListener("click", resetWeights);
  const targets = $("targets");
  for (let d = 0; d < sizes[L]; d++) {
    const b = document.createElement("button");
    b.textContent = String(d);
    b.dataset.digit = String(d);
    b.addEventListener("click", () => { state.pinnedTarget = d; state.costs = []; update(); });
    targets.appendChild(b);
  }

  // -------------------------------------------------------------------------
  // 4. Mini-batch SGD in a Web Worker. The worker's whole source is this
  //    function and networkMath (section 1): it owns the training network, the
  //    sample and the shuffle, and runs one step per task, so a pause lands
  //    between two steps and the page's own thread stays free for drawing.
  //    Messages in: init, reset, run, tune, pause; out: step (after every
  //    step), snapshot (the weights, a few times a second and at every stop),
  //    done (a run's end), ack.
  function trainerWorker() {
    let train = null, heldout = null; // {X: Float32Array (n * 784) in [0, 1], y: Uint8Array, n}
    let math, p, k, grads, step, epoch, order, cursor, shuffle;
    let job = null; // the run going on: {id, gen, left, batch, lr, speed, costs}
    let gen = 0; // which run a scheduled tick belongs to
    let last = null; // the last step's mini-batch and its examples' wished nudges
    let evaluation = null; // {step, sampleCost, accuracy}
    let shownAt = 0, evaluatedAt = 0, evaluationTook = 0;
    const now = () => performance.now();
    const EARLY = new Set([1, 2, 5, 10, 20, 50, 100, 200, 500, 1000]);
    const post = (msg, transfer) => self.postMessage(msg, transfer || []);

    function mulberry32(a) { // a small seeded generator: the same seed, the same shuffles
      return () => {
        a = (a + 0x6d2b79f5) | 0;
        let t = Math.imul(a ^ (a >>> 15), 1 | a);
        t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
        return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
      };
    }

    function images(part) { // uint8 pixels -> float32 in [0, 1], as bp's X / 255
      const X = new Float32Array(part.pixels.length);
      for (let i = 0; i < X.length; i++) X[i] = part.pixels[i] / 255;
      return { X, y: part.labels, n: part.labels.length };
    }
    const row = (set, i) => set.X.subarray(i * 784, (i + 1) * 784);

    // init "xavier" (network.init_params): W ~ N(0, 1/fan_in), b = 0; normal numbers by
    // Box-Muller from the seeded generator: bp's distribution, not bp's numbers
    function xavier(sizes, random) {
      const gauss = () => Math.sqrt(-2 * Math.log(1 - random())) * Math.cos(2 * Math.PI * random());
      const Ws = [], bs = [];
      for (let l = 0; l + 1 < sizes.length; l++) {
        const W = new Float32Array(sizes[l] * sizes[l + 1]), scale = Math.sqrt(1 / sizes[l]);
        for (let i = 0; i < W.length; i++) W[i] = gauss() * scale;
        Ws.push(W);
        bs.push(new Float32Array(sizes[l + 1]));
      }
      return { Ws, bs };
    }

    function nextBatch(size) { // the next `size` indices of this epoch's shuffle; an epoch's last batch may be short
      if (order === null || cursor >= order.length) {
        order = Array.from({ length: train.n }, (_, i) => i);
        for (let i = order.length - 1; i > 0; i--) { // Fisher-Yates
          const j = Math.floor(shuffle() * (i + 1));
          [order[i], order[j]] = [order[j], order[i]];
        }
        cursor = 0;
        epoch++;
      }
      const batch = order.slice(cursor, cursor + size);
      cursor += batch.length;
      return batch;
    }

    // One step: the gradient of the mini-batch's mean cost (each example's
    // backprop, averaged), then w <- w - lr g (optim.SGD, no momentum); each
    // weight is stored back as float32, as bp stores it.
    function sgdStep(batch, lr) {
      const n = batch.length;
      for (const a of [...grads.dWs, ...grads.dbs]) a.fill(0);
      let cost = 0;
      const wishes = [];
      for (const i of batch) {
        const acts = math.forward(p, row(train, i)), A = acts[acts.length - 1], Y = math.oneHot(train.y[i], k);
        cost += math.exampleCost(A, Y);
        wishes.push(math.outputWish(A, Y));
        math.backward(p, acts, Y, grads, 1 / n);
      }
      for (let l = 0; l < p.Ws.length; l++) {
        const W = p.Ws[l], dW = grads.dWs[l], b = p.bs[l], db = grads.dbs[l];
        for (let i = 0; i < W.length; i++) W[i] -= lr * dW[i];
        for (let i = 0; i < b.length; i++) b[i] -= lr * db[i];
      }
      const average = Array.from({ length: k }, (_, j) => wishes.reduce((s, w) => s + w[j], 0) / n);
      last = { step, batch, labels: batch.map((i) => train.y[i]), rows: wishes, average };
      return cost / n;
    }

    function evaluate() { // C over the whole sample, accuracy on the held-out images
      const t0 = now();
      let cost = 0, correct = 0;
      for (let i = 0; i < train.n; i++) {
        const acts = math.forward(p, row(train, i));
        cost += math.exampleCost(acts[acts.length - 1], math.oneHot(train.y[i], k));
      }
      for (let i = 0; i < heldout.n; i++) {
        const acts = math.forward(p, row(heldout, i));
        if (math.argmax(acts[acts.length - 1]) === heldout.y[i]) correct++;
      }
      evaluation = { step, sampleCost: cost / train.n, accuracy: correct / heldout.n };
      evaluatedAt = now();
      evaluationTook = evaluatedAt - t0;
    }

    function snapshot(extra) {
      const Ws = p.Ws.map((a) => a.slice()), bs = p.bs.map((a) => a.slice());
      post({ type: "snapshot", step, epoch, Ws, bs, last, evaluation, ...extra }, [...Ws, ...bs].map((a) => a.buffer));
      shownAt = now();
    }

    // one step per task: a zero-delay message (setTimeout would wait >= 4 ms) or a timer for slow speeds
    const channel = new MessageChannel();
    channel.port1.onmessage = (e) => tick(e.data);
    function schedule(delay) {
      if (delay > 0) setTimeout(() => tick(job.gen), delay);
      else channel.port2.postMessage(job.gen);
    }

    function tick(g) {
      if (job === null || g !== job.gen) return; // paused, or a tick of an earlier run
      const t0 = now();
      const batch = nextBatch(job.batch);
      const cost = sgdStep(batch, job.lr);
      step++;
      job.costs.push(cost);
      job.left--;
      post({ type: "step", step, cost, batch });
      if (job.left <= 0) return finish("done");
      // the whole sample's cost costs many steps: at most a fifth of the time, at most 7 times a
      // second; and at steps 1, 2, 5, 10, 20, 50, ... so that the first fall shows too
      if (now() - evaluatedAt > Math.max(150, 4 * evaluationTook) || EARLY.has(step)) evaluate();
      if (now() - shownAt > 100) snapshot();
      schedule(job.speed > 0 ? 1000 / job.speed - (now() - t0) : 0);
    }

    function finish(reason, extra) {
      const ended = job;
      job = null;
      if (!evaluation || evaluation.step !== step) evaluate();
      snapshot();
      post({ type: "done", id: ended.id, reason, cost: ended.costs, accuracy: evaluation.accuracy,
        sampleCost: evaluation.sampleCost, step, ...extra });
    }

    const handlers = {
      init(m) { train = images(m.train); heldout = images(m.heldout); },
      reset(m) { // a new network (sizes etc. in m.spec) with weights m.Ws, m.bs; the shuffle from m.seed
        math = networkMath(m.spec);
        k = m.spec.sizes[m.spec.sizes.length - 1];
        p = m.Ws ? { Ws: m.Ws.map((a) => Float32Array.from(a)), bs: m.bs.map((a) => Float32Array.from(a)) }
          : xavier(m.spec.sizes, mulberry32(m.seed ^ 0x5eed5eed));
        grads = math.zeros();
        shuffle = mulberry32(m.seed);
        step = 0; epoch = 0; order = null; cursor = 0; last = null; evaluation = null;
        evaluate();
        snapshot({ reset: m.id, spec: m.spec, from: m.from, seed: m.seed });
      },
      run(m) {
        if (job !== null) return post({ type: "done", id: m.id, error: "training is already running: pause it first" });
        job = { id: m.id, gen: ++gen, left: m.steps, batch: m.batch, lr: m.lr, speed: m.speed, costs: [] };
        schedule(0);
      },
      tune(m) { if (job !== null) Object.assign(job, m.settings); },
      pause(m) { // between two steps, by construction: this message is a task of its own
        const at = step;
        if (job !== null) finish("paused");
        post({ type: "ack", id: m.id, step, stepWhenAsked: at });
      },
    };
    self.onmessage = (e) => handlers[e.data.type](e.data);
  }

  // The page's side of the trainer: the worker, what it reported, the Train panel.
  function makeTrainer() {
    const source = `"use strict";\nconst networkMath = ${networkMath};\n(${trainerWorker})();\n`;
    // a worker from a blob: a page opened from file:// may not load a worker script file
    const worker = new Worker(URL.createObjectURL(new Blob([source], { type: "text/javascript" })));
    const part = (d) => ({ pixels: decodeBytes(d.pixels), labels: decodeBytes(d.labels), indices: d.indices });
    const T = {
      worker, train: part(SAMPLE.train), heldout: part(SAMPLE.heldout),
      scratch: { sizes: SAMPLE.scratch.sizes, activation: SAMPLE.scratch.activation, output: SAMPLE.scratch.output,
        loss: SAMPLE.scratch.loss, lr: SAMPLE.scratch.lr },
      from: "model", seed: SAMPLE.seed, spec: null, snapshot: null, params: null,
      costs: [], batches: [], evals: [], running: null, waiting: new Map(), nextId: 1, rendered: -1,
    };
    worker.postMessage({ type: "init", train: T.train, heldout: T.heldout });
    worker.onmessage = (e) => {
      const m = e.data;
      if (m.type === "step") {
        T.costs.push(m.cost);
        T.batches.push(m.batch);
      } else if (m.type === "snapshot") {
        if (m.reset !== undefined) Object.assign(T, { costs: [], batches: [], evals: [], spec: m.spec, from: m.from, seed: m.seed });
        T.snapshot = m;
        T.params = { Ws: m.Ws, bs: m.bs };
        if (m.evaluation && (T.evals.length === 0 || T.evals[T.evals.length - 1].step !== m.evaluation.step)) T.evals.push(m.evaluation);
        if (m.reset !== undefined) { useNetwork(T.spec, T.params); modelLineUpdate(); settle(m.reset, trainState()); }
        else params = copyParams(T.params); // the drawing, the network and backprop follow the training
      } else if (m.type === "done") {
        if (T.running === m.id) T.running = null;
        settle(m.id, m);
      } else if (m.type === "ack") {
        settle(m.id, m);
      }
      scheduleTrainRender();
    };
    worker.onerror = (e) => { $("train-status").textContent = `the trainer stopped: ${e.message}`; };
    function settle(id, value) {
      const w = T.waiting.get(id);
      if (w) { T.waiting.delete(id); value && value.error ? w.reject(new Error(value.error)) : w.resolve(value); }
    }
    T.ask = (msg) => { // -> {id, promise}: the promise settles with the worker's answer to message id
      const id = T.nextId++;
      const promise = new Promise((resolve, reject) => T.waiting.set(id, { resolve, reject }));
      worker.postMessage({ ...msg, id });
      return { id, promise };
    };
    return T;
  }

  // --- the Train panel ---

  const modelSpec = { sizes: M.sizes, activation: M.activation, output: M.output, loss: M.loss, lr: M.lr };
  const trainer = SAMPLE ? makeTrainer() : null;
  const MAX_STEPS = 1e6;
  const BLUE_RGB = [0x2f, 0x6f, 0xdf], RED_RGB = [0xd8, 0x40, 0x2f]; // BLUE and RED as numbers
  const PICTURES = 16; // of the first hidden layer, the first 16 neurons' weights

  function noSample() {
    return new Error("this page has no training sample: export it with bp export --web DIR --train-sample N");
  }

  // Start again: from the exported model, or from scratch (the seed network). The
  // seed shuffles the mini-batches; from scratch it also draws the weights.
  async function reset({ from = trainer && trainer.from, seed = trainer && trainer.seed } = {}) {
    if (!trainer) throw noSample();
    if (from !== "scratch" && from !== "model") throw new TypeError('from must be "scratch" or "model"');
    if (!Number.isSafeInteger(seed) || seed < 0 || seed > 0xffffffff) throw new TypeError("seed must be a whole number from 0 to 2^32 - 1");
    if (trainer.running !== null) await pause();
    const spec = from === "model" ? modelSpec : trainer.scratch;
    let start = {}; // none: the worker draws the scratch weights for this seed
    if (from === "model") start = { Ws: original.Ws, bs: original.bs };
    else if (seed === SAMPLE.seed) start = { Ws: SAMPLE.scratch.W.map(decodeFloat32), bs: SAMPLE.scratch.b.map(decodeFloat32) };
    $("train-from").value = from;
    $("train-seed").value = String(seed);
    return trainer.ask({ type: "reset", spec, from, seed, ...start }).promise;
  }

  // Run `steps` mini-batch steps (Infinity: until paused) -> {cost: [each step's
  // mini-batch cost], accuracy, sampleCost, step, stopped: "done" | "paused"}
  function train({ steps = 1, batch = uiNumber("train-batch"), lr = uiNumber("train-lr"), speed = 0 } = {}) {
    if (!trainer) return Promise.reject(noSample());
    if (!(steps === Infinity || (Number.isInteger(steps) && steps >= 1 && steps <= MAX_STEPS))) {
      return Promise.reject(new TypeError(`steps must be a whole number from 1 to ${MAX_STEPS}`));
    }
    if (!Number.isInteger(batch) || batch < 1 || batch > trainer.train.labels.length) {
      return Promise.reject(new TypeError(`batch must be a whole number from 1 to ${trainer.train.labels.length}`));
    }
    if (!Number.isFinite(lr) || lr < 0) return Promise.reject(new TypeError("lr must be a number >= 0"));
    if (trainer.running !== null || !trainer.snapshot) return Promise.reject(new Error("training is already running: pause it first"));
    const { id, promise } = trainer.ask({ type: "run", steps, batch, lr, speed });
    trainer.running = id;
    scheduleTrainRender();
    return promise.then((m) => ({ cost: m.cost, accuracy: m.accuracy, sampleCost: m.sampleCost, step: m.step, stopped: m.reason }));
  }

  // -> {step: where it stopped, stepWhenAsked: the step the worker had made when the pause reached it}
  function pause() {
    if (!trainer) return Promise.reject(noSample());
    return trainer.ask({ type: "pause" }).promise;
  }

  function uiNumber(id) {
    return Number($(id).value);
  }

  function uiSettings() {
    return { batch: uiNumber("train-batch"), lr: uiNumber("train-lr"), speed: uiNumber("train-speed") };
  }

  // W[l] (fan_in, fan_out) row-major -> fan_out rows of fan_in numbers: rows = outputs
  function rowsOf(W, fanIn, fanOut) {
    return Array.from({ length: fanOut }, (_, j) => Array.from({ length: fanIn }, (_, i) => W[i * fanOut + j]));
  }

  function trainState() {
    if (!trainer) throw noSample();
    const s = trainer.snapshot, sz = trainer.spec.sizes;
    if (!s) return null;
    return {
      from: trainer.from, seed: trainer.seed, sizes: sz.slice(),
      W: s.Ws.map((W, l) => rowsOf(W, sz[l], sz[l + 1])), b: s.bs.map((b) => Array.from(b)),
      step: s.step, epoch: s.epoch, batches: trainer.batches.slice(0, s.step).map((b) => b.slice()),
      sampleCost: s.evaluation.sampleCost, accuracy: s.evaluation.accuracy, evaluatedAt: s.evaluation.step,
      // the last step's mini-batch: each example's -dC0/da(L) before the step, and their average
      nudges: s.last && { step: s.last.step, batch: s.last.batch.slice(), labels: Array.from(s.last.labels),
        rows: s.last.rows.map((r) => r.slice()), average: s.last.average.slice() },
      running: trainer.running !== null,
    };
  }

  function sampleData() {
    if (!trainer) throw noSample();
    const { pixels, labels } = trainer.train, n = labels.length;
    return { pixels: Array.from({ length: n }, (_, i) => Array.from(pixels.subarray(i * 784, (i + 1) * 784), (v) => v / 255)),
      labels: Array.from(labels), indices: trainer.train.indices.slice() };
  }

  let trainRenderQueued = false;
  function scheduleTrainRender() {
    if (!trainRenderQueued) { trainRenderQueued = true; requestAnimationFrame(() => { trainRenderQueued = false; renderTrain(); }); }
  }

  function renderTrain() {
    const s = trainer.snapshot;
    if (!s) return;
    const running = trainer.running !== null;
    $("train-play").disabled = running;
    $("train-step").disabled = running;
    $("train-pause").disabled = !running;
    const step = trainer.costs.length, e = s.evaluation;
    const lastCost = step ? trainer.costs[step - 1] : null;
    $("train-status").textContent = [`step ${step}`, `epoch ${Math.max(s.epoch, 1)} (${trainer.train.labels.length.toLocaleString("en")} images each)`,
      lastCost === null ? "no mini-batch yet" : `last mini-batch cost ${fmt(lastCost)}`,
      `sample cost ${fmt(e.sampleCost)} and held-out accuracy ${(100 * e.accuracy).toFixed(1)} % (${trainer.heldout.labels.length.toLocaleString("en")} test images), at step ${e.step}`].join(" · ");
    drawCurves();
    if (trainer.rendered !== s) {
      trainer.rendered = s;
      drawWeightPictures(s);
      nudgeTable(s.last);
      update();
      document.body.dataset.trainShown = String(s.step);
    }
  }

  function drawCurves() {
    const canvas = $("curves"), ctx = canvas.getContext("2d"), W = canvas.width, H = canvas.height;
    ctx.clearRect(0, 0, W, H);
    ctx.font = "13px system-ui, sans-serif";
    const costs = trainer.costs, evals = trainer.evals;
    const steps = Math.max(10, costs.length, ...evals.map((e) => e.step));
    const top = 1.05 * Math.max(1e-9, ...costs, ...evals.map((e) => e.sampleCost));
    const panel = (x0, x1, y0, y1, ymax, title, yLabel) => {
      const px = (s) => x0 + ((x1 - x0) * s) / steps, py = (v) => y1 - ((y1 - y0) * v) / ymax;
      ctx.strokeStyle = "#999";
      ctx.lineWidth = 1;
      ctx.beginPath();
      ctx.moveTo(x0, y0); ctx.lineTo(x0, y1); ctx.lineTo(x1, y1);
      ctx.stroke();
      ctx.fillStyle = "#222";
      ctx.textAlign = "left";
      ctx.font = "bold 14px system-ui, sans-serif";
      ctx.fillText(title, x0, y0 - 12);
      ctx.font = "12px system-ui, sans-serif";
      ctx.fillStyle = "#555";
      ctx.textAlign = "right";
      for (const v of [0, ymax / 2, ymax]) ctx.fillText(yLabel(v), x0 - 5, py(v) + 4);
      ctx.textAlign = "center";
      ctx.fillText("0", x0, y1 + 15);
      ctx.fillText(`step ${steps}`, x1 - 20, y1 + 15);
      return { px, py };
    };
    // the stumbling (each mini-batch) and the descent (the whole sample), side by side
    const c = panel(60, 760, 36, H - 26, top, "Cost: each mini-batch (grey) and the whole sample (blue)", (v) => v.toFixed(2));
    const stride = Math.max(1, Math.ceil(costs.length / 1400));
    ctx.strokeStyle = "#9a9a9a";
    ctx.lineWidth = 1;
    ctx.beginPath();
    for (let i = 0; i < costs.length; i += stride) (i === 0 ? ctx.moveTo : ctx.lineTo).call(ctx, c.px(i + 1), c.py(costs[i]));
    ctx.stroke();
    polyline(evals.map((e) => [c.px(e.step), c.py(e.sampleCost)]), BLUE);
    const a = panel(850, W - 20, 36, H - 26, 1, "Held-out accuracy", (v) => `${Math.round(100 * v)} %`);
    ctx.setLineDash([4, 4]);
    polyline([[a.px(0), a.py(0.1)], [a.px(steps), a.py(0.1)]], "#bbb", false);
    ctx.setLineDash([]);
    ctx.fillStyle = "#888";
    ctx.textAlign = "left";
    ctx.fillText("chance", a.px(0) + 4, a.py(0.1) - 4);
    polyline(evals.map((e) => [a.px(e.step), a.py(e.accuracy)]), "#2a8a3a");
  }

  function polyline(points, colour, dots = true) {
    const ctx = $("curves").getContext("2d");
    ctx.strokeStyle = ctx.fillStyle = colour;
    ctx.lineWidth = 2.5;
    ctx.beginPath();
    points.forEach(([x, y], i) => (i === 0 ? ctx.moveTo(x, y) : ctx.lineTo(x, y)));
    ctx.stroke();
    if (dots && points.length < 200) for (const [x, y] of points) { ctx.beginPath(); ctx.arc(x, y, 3, 0, 2 * Math.PI); ctx.fill(); }
  }

  // One 28x28 picture per neuron of the first hidden layer: pixel i is its weight from
  // input pixel i, blue positive, red negative, white 0, full colour at the largest |w| of that neuron.
  function weightColour(w, wmax) {
    const t = Math.min(1, Math.abs(w) / wmax), c = w >= 0 ? BLUE_RGB : RED_RGB;
    return c.map((v) => Math.round(255 + (v - 255) * t));
  }

  function drawWeightPictures(s) {
    const box = $("weight-pictures"), n = trainer.spec.sizes[1], shown = Math.min(PICTURES, n), W = s.Ws[0];
    if (box.childElementCount !== shown || box.dataset.of !== String(n)) {
      box.textContent = "";
      box.dataset.of = String(n);
      for (let u = 0; u < shown; u++) {
        const fig = document.createElement("figure"), canvas = document.createElement("canvas");
        canvas.width = canvas.height = 28;
        canvas.dataset.neuron = String(u);
        const cap = document.createElement("figcaption");
        cap.textContent = `neuron ${u}`;
        fig.append(canvas, cap);
        box.appendChild(fig);
      }
    }
    $("weights-note").textContent = shown < n ? `(the first ${shown} of its ${n} neurons)` : `(all ${n} neurons)`;
    box.querySelectorAll("canvas").forEach((canvas) => {
      const u = Number(canvas.dataset.neuron), ctx = canvas.getContext("2d"), img = ctx.createImageData(28, 28);
      let wmax = 1e-12;
      for (let i = 0; i < 784; i++) wmax = Math.max(wmax, Math.abs(W[i * n + u]));
      for (let i = 0; i < 784; i++) img.data.set([...weightColour(W[i * n + u], wmax), 255], 4 * i);
      ctx.putImageData(img, 0, 0);
    });
  }

  const NUDGE_ROWS = 10; // of a larger mini-batch, the first 10 rows are shown; the average is over all
  function nudgeTable(last) {
    const head = $("nudge-head"), body = $("nudge-rows");
    if (!head.childElementCount) {
      const tr = document.createElement("tr");
      for (const text of ["example", "digit", ...Array.from({ length: 10 }, (_, j) => `output ${j}`)]) {
        const th = document.createElement("th");
        th.textContent = text;
        tr.appendChild(th);
      }
      head.appendChild(tr);
    }
    body.textContent = "";
    $("nudge-caption").textContent = last ? `The mini-batch of step ${last.step + 1} (${last.batch.length} examples), before that step:` : "No step yet: press One step or Play.";
    if (!last) return;
    const add = (first, second, values, label, cls) => {
      const tr = document.createElement("tr");
      if (cls) tr.className = cls;
      for (const text of [first, second]) { const td = document.createElement("td"); td.textContent = text; tr.appendChild(td); }
      values.forEach((v, j) => {
        const td = document.createElement("td");
        td.textContent = v.toFixed(2).replace(/^-(0\.00)$/, "$1");  // a wish too small to show has no sign
        td.className = `${v > 0 ? "up" : v < 0 ? "down" : ""}${j === label ? " wanted" : ""}`;
        td.style.setProperty("--strength", String(Math.min(1, Math.abs(v) / 2)));
        tr.appendChild(td);
      });
      body.appendChild(tr);
    };
    last.rows.slice(0, NUDGE_ROWS).forEach((r, i) => add(`#${trainer.train.indices[last.batch[i]]}`, String(last.labels[i]), r, last.labels[i]));
    if (last.rows.length > NUDGE_ROWS) {
      const tr = document.createElement("tr"), td = document.createElement("td");
      td.colSpan = 12;
      td.textContent = `… ${last.rows.length - NUDGE_ROWS} more examples`;
      tr.appendChild(td);
      body.appendChild(tr);
    }
    add("average", "", last.average, -1, "average");
  }

  function modelLineUpdate() {
    $("model-line").textContent = modelLine();
    $("lr").textContent = String(net.lr);
    if (!trainer) return;
    const t = trainer, scratch = t.from === "scratch";
    $("train-start").textContent = scratch
      ? `From scratch: the seed network (${t.spec.sizes.join("-")} sigmoid neurons, quadratic cost), weights drawn N(0, 1/fan_in), biases 0, seed ${t.seed}` +
        (t.seed === SAMPLE.seed ? `: the very weights bp train -c seed --seed ${t.seed} starts from.` : ": drawn here in the page (bp's distribution, not bp's numbers; seed " + SAMPLE.seed + " is bp's own start).")
      : `From the exported model${M.checkpoint ? ` (${M.checkpoint})` : ""}: it goes on learning from where bp left it. Seed ${t.seed} shuffles the mini-batches.`;
  }

  function wireTrainPanel() {
    if (!trainer) {
      $("train-panel").hidden = true;
      $("train-none").hidden = false;
      return;
    }
    const restart = () => reset({ from: $("train-from").value, seed: Number($("train-seed").value) }).catch(showTrainError);
    $("train-from").addEventListener("change", restart);
    $("train-seed").addEventListener("change", restart);
    $("train-reset").addEventListener("click", restart);
    $("train-play").addEventListener("click", () => train({ steps: Infinity, ...uiSettings() }).catch(showTrainError));
    $("train-step").addEventListener("click", () => train({ steps: 1, ...uiSettings() }).catch(showTrainError));
    $("train-pause").addEventListener("click", () => pause().catch(showTrainError));
    for (const id of ["train-batch", "train-lr", "train-speed"]) {
      $(id).addEventListener("change", () => {
        const u = uiSettings(), fine = Number.isInteger(u.batch) && u.batch >= 1 && u.batch <= trainer.train.labels.length && Number.isFinite(u.lr) && u.lr >= 0;
        if (trainer.running !== null && fine) trainer.worker.postMessage({ type: "tune", settings: u });
      });
    }
    $("train-sample-line").textContent = `${trainer.train.labels.length.toLocaleString("en")} MNIST training images and ${trainer.heldout.labels.length.toLocaleString("en")} held-out test images, drawn with seed ${SAMPLE.seed}, are in this page.`;
    reset({ from: "model", seed: SAMPLE.seed }).then(() => { document.body.dataset.trainReady = "1"; });
  }

  function showTrainError(err) {
    $("train-status").textContent = `Error: ${err.message}`;
  }

  // -------------------------------------------------------------------------
  // window.bp: the API. pixels784 = the prepared input, 784 numbers in [0, 1],
  // row-major 28x28, ink 1 (MNIST test image i / 255 is bp explain --index i's).
  // Both use the page's current weights: the checkpoint's, or the Train panel's
  // network as it trains, until "one SGD step" is pressed (resetWeights()
  // brings them back). sample/reset/state/train/pause drive the Train panel.

  function checkPixels(pixels) {
    if (!pixels || pixels.length !== 784) throw new TypeError("pixels784 must hold 784 numbers in [0, 1]");
    return Array.from(pixels, Number);
  }

  window.bp = {
    model: { sizes: M.sizes.slice(), activation: M.activation, output: M.output, loss: M.loss, lr: M.lr, checkpoint: M.checkpoint },
    // the Train panel (sample.js): see docs/web.md
    sample: sampleData,
    reset,
    state: trainState,
    train,
    pause,
    // the ten probabilities, as bp predict --json reports them
    predict: (pixels) => probabilities(forward(params, checkPixels(pixels))[L]),
    // bp explain --json's document for one example (target: default the prediction;
    // label: the true digit if known); zoom_out is null: it needs MNIST batches
    explain: (pixels, target, top = 5, label = null) => explain(params, checkPixels(pixels), target, top, label),
    // image.prepare of a grey picture (w*h values in [0, 1], 1 = white) -> 784 uint8 as numbers, or null
    prepare: (grey, w, h) => { const u8 = prepareGray(grey, w, h); return u8 && Array.from(u8); },
    input: () => state.input && state.input.slice(), // the pad's prepared input, or null
    padImage: () => padCanvas.toDataURL("image/png"),
    sgdStep: step,
    resetWeights,
    costs: () => state.costs.slice(),
  };

  modelLineUpdate();
  clearPad();
  wireTrainPanel();
})();
