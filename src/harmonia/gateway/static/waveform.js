// A waveform on a <canvas>: the audio is decoded with the Web Audio API (decodeAudioData), reduced
// to min/max peaks per column, and redrawn on resize; a playhead follows the <audio> element and a
// click seeks it.

let decoder = null;

function context() {
  // An OfflineAudioContext decodes without asking for an audio device or a user gesture.
  decoder ??= new OfflineAudioContext(1, 1, 44100);
  return decoder;
}

/** Decode encoded audio bytes (WAV, FLAC, ...) into an AudioBuffer. */
export async function decode(arrayBuffer) {
  return context().decodeAudioData(arrayBuffer);
}

/** Min/max per bucket over all channels mixed down: `buckets` pairs in [-1, 1]. */
export function peaks(buffer, buckets) {
  const channels = [];
  for (let c = 0; c < buffer.numberOfChannels; c++) channels.push(buffer.getChannelData(c));
  const length = buffer.length;
  const mins = new Float32Array(buckets);
  const maxs = new Float32Array(buckets);
  for (let b = 0; b < buckets; b++) {
    const start = Math.floor((b * length) / buckets);
    const end = Math.max(start + 1, Math.floor(((b + 1) * length) / buckets));
    let lo = 1;
    let hi = -1;
    for (let i = start; i < end && i < length; i++) {
      let v = 0;
      for (const data of channels) v += data[i];
      v /= channels.length;
      if (v < lo) lo = v;
      if (v > hi) hi = v;
    }
    mins[b] = lo > hi ? 0 : lo;
    maxs[b] = lo > hi ? 0 : hi;
  }
  return { mins, maxs };
}

export class Waveform {
  constructor(canvas, audio) {
    this.canvas = canvas;
    this.audio = audio;
    this.buffer = null;
    this.cache = null;
    this.frame = 0;
    new ResizeObserver(() => this.draw()).observe(canvas);
    for (const type of ["timeupdate", "seeked", "play", "pause"]) {
      audio.addEventListener(type, () => this.schedule());
    }
    canvas.addEventListener("click", (event) => {
      if (!this.buffer || !Number.isFinite(audio.duration)) return;
      const rect = canvas.getBoundingClientRect();
      audio.currentTime = ((event.clientX - rect.left) / rect.width) * audio.duration;
    });
  }

  /** Show `buffer` (an AudioBuffer), or clear with null. */
  set(buffer, label = "") {
    this.buffer = buffer;
    this.cache = null;
    this.canvas.setAttribute(
      "aria-label",
      buffer ? `Waveform of ${label}, ${buffer.duration.toFixed(1)} seconds` : "Waveform",
    );
    this.draw();
  }

  schedule() {
    cancelAnimationFrame(this.frame);
    this.frame = requestAnimationFrame(() => {
      this.draw();
      if (!this.audio.paused) this.schedule();
    });
  }

  draw() {
    const { canvas } = this;
    const ratio = window.devicePixelRatio || 1;
    const width = Math.max(1, Math.round(canvas.clientWidth * ratio));
    const height = Math.max(1, Math.round(canvas.clientHeight * ratio));
    if (canvas.width !== width || canvas.height !== height) {
      canvas.width = width;
      canvas.height = height;
    }
    const ctx = canvas.getContext("2d");
    const style = getComputedStyle(canvas);
    ctx.fillStyle = style.getPropertyValue("--wave-bg").trim() || "#f3f4f6";
    ctx.fillRect(0, 0, width, height);
    if (!this.buffer) return;
    if (!this.cache || this.cache.mins.length !== width) this.cache = peaks(this.buffer, width);
    const { mins, maxs } = this.cache;
    const mid = height / 2;
    const played = Number.isFinite(this.audio.duration) && this.audio.duration > 0
      ? Math.round((this.audio.currentTime / this.audio.duration) * width)
      : 0;
    const colour = style.getPropertyValue("--wave").trim() || "#2563eb";
    const done = style.getPropertyValue("--wave-played").trim() || "#1e3a8a";
    for (let x = 0; x < width; x++) {
      const top = mid - maxs[x] * mid;
      const bottom = mid - mins[x] * mid;
      ctx.fillStyle = x < played ? done : colour;
      ctx.fillRect(x, top, 1, Math.max(1, bottom - top));
    }
    if (played > 0) {
      ctx.fillStyle = done;
      ctx.fillRect(played, 0, Math.max(1, ratio), height);
    }
  }
}
