// Drives Debian's Chromium (no browser download) against a running liveface server.
//
//   node drive.mjs URL WAV PAGES SECONDS
//
// Opens PAGES tabs on URL with a fake microphone playing WAV, presses Start in each, and for SECONDS
// records in every page: the microphone level (local analyser), each received video frame's
// presentation and expected display time and the mean brightness of the avatar's mouth box, the
// level of the received (played) audio per 128-sample render quantum with the time it leaves the
// audio output, and the audio/video estimatedPlayoutTimestamp from getStats. Prints one JSON
// object on stdout.
import { chromium } from "playwright-core";

const [url, wav, pagesArg, secondsArg] = process.argv.slice(2);
const pages = Number(pagesArg || 1);
const seconds = Number(secondsArg || 10);
const executablePath = process.env.CHROMIUM || "/usr/lib/chromium/chromium";
// One browser context (a window of its own) per page: tabs behind another tab are throttled.
// Playwright gives launch() a fresh temporary profile (--user-data-dir) and removes it after.
const browser = await chromium.launch({
  executablePath,
  headless: true,
  args: [
    "--disable-background-timer-throttling", "--disable-renderer-backgrounding",
    "--disable-backgrounding-occluded-windows",
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
    `--use-file-for-fake-audio-capture=${wav}`,
    "--autoplay-policy=no-user-gesture-required",
  ],
});

// Injected into every page before its scripts run: the measurement side of the test.
function instrument() {
  const rec = (window.__rec = {
    mic: [], frames: [], patches: [], sync: [], played: [], outputLatency: [], errors: [],
  });
  // The played audio, tapped in the audio thread: RMS of every render quantum and the context
  // time of its first sample; mapped to the page clock at the moment it leaves the output.
  const tapSource = `
    class Tap extends AudioWorkletProcessor {
      process(inputs) {
        const ch = inputs[0] && inputs[0][0];
        if (ch) {
          let s = 0;
          for (let i = 0; i < ch.length; i++) s += ch[i] * ch[i];
          this.port.postMessage([currentTime, Math.sqrt(s / ch.length)]);
        }
        return true;
      }
    }
    registerProcessor("tap", Tap);`;
  window.__tapPlayed = async (stream) => {
    const ctx = new AudioContext();
    await ctx.audioWorklet.addModule(URL.createObjectURL(new Blob([tapSource], { type: "text/javascript" })));
    const node = new AudioWorkletNode(ctx, "tap");
    ctx.createMediaStreamSource(stream).connect(node);
    node.connect(ctx.destination);
    setInterval(() => rec.outputLatency.push([ctx.baseLatency, ctx.outputLatency]), 1000);
    node.port.onmessage = (e) => {
      const ts = ctx.getOutputTimestamp();
      if (!ts.performanceTime) return;
      const [t, rms] = e.data;
      rec.played.push([ts.performanceTime + (t - ts.contextTime) * 1000, rms]);
    };
  };
  window.__startMeasure = (box) => {
    const lf = window.liveface;
    const ctx = new AudioContext();
    const src = ctx.createMediaStreamSource(lf.mic);
    const an = ctx.createAnalyser();
    an.fftSize = 256;
    src.connect(an);
    const buf = new Float32Array(an.fftSize);
    setInterval(() => {
      an.getFloatTimeDomainData(buf);
      let s = 0;
      for (const x of buf) s += x * x;
      rec.mic.push([performance.now(), Math.sqrt(s / buf.length)]);
    }, 4);
    const video = document.getElementById("avatar");
    const canvas = document.createElement("canvas");
    const g = canvas.getContext("2d", { willReadFrequently: true });
    const onFrame = (now, meta) => {
      const w = video.videoWidth, h = video.videoHeight;
      if (w && h) {
        canvas.width = w;
        canvas.height = h;
        g.drawImage(video, 0, 0, w, h);
        const x0 = Math.round(box[0] * w), y0 = Math.round(box[1] * h);
        const bw = Math.max(1, Math.round((box[2] - box[0]) * w));
        const bh = Math.max(1, Math.round((box[3] - box[1]) * h));
        const px = g.getImageData(x0, y0, bw, bh).data;
        let sum = 0;
        for (let i = 0; i < px.length; i += 4) sum += px[i] + px[i + 1] + px[i + 2];
        // The mouth as an 8x4 grid of mean grey levels: a shape change that leaves the mean
        // brightness alone (lips parting over teeth) still shows.
        const grid = new Array(32).fill(0), count = new Array(32).fill(0);
        for (let y = 0; y < bh; y++) {
          for (let x = 0; x < bw; x++) {
            const i = (y * bw + x) * 4, c = Math.floor((y * 4) / bh) * 8 + Math.floor((x * 8) / bw);
            grid[c] += px[i] + px[i + 1] + px[i + 2];
            count[c] += 3;
          }
        }
        rec.patches.push(grid.map((v, k) => Math.round(v / Math.max(1, count[k]))));
        rec.frames.push([meta.presentationTime, sum / (px.length / 4) / 3, meta.rtpTimestamp || 0,
                         meta.expectedDisplayTime]);
      }
      video.requestVideoFrameCallback(onFrame);
    };
    video.requestVideoFrameCallback(onFrame);
    // The remote tracks may reach the video element after the answer (a busy machine): tap the
    // audio as soon as it is there.
    const tapWhenThere = setInterval(() => {
      if (video.srcObject && video.srcObject.getAudioTracks().length) {
        clearInterval(tapWhenThere);
        window.__tapPlayed(new MediaStream(video.srcObject.getAudioTracks())).catch((e) => rec.errors.push(String(e)));
      }
    }, 10);
    setInterval(async () => {
      if (!lf.pc) return;
      const report = await lf.pc.getStats();
      const est = {};
      report.forEach((r) => {
        if (r.type === "inbound-rtp" && r.estimatedPlayoutTimestamp) est[r.kind] = r.estimatedPlayoutTimestamp;
      });
      if (est.audio && est.video) rec.sync.push([performance.now(), est.video - est.audio]);
    }, 200);
  };
}

const tabs = [];
for (let i = 0; i < pages; i++) {
  const context = await browser.newContext();
  await context.addInitScript(instrument);
  const page = await context.newPage();
  page.on("console", (m) => process.stderr.write(`[page ${i}] ${m.text()}\n`));
  await page.goto(url);
  tabs.push(page);
}
const t0 = Date.now();
const started = [];
for (const page of tabs) {
  const clicked = Date.now();
  await page.click("#start");
  // Wait for the answer (or an error) before opening the next session.
  await page.waitForFunction(
    () => (window.liveface && window.liveface.answer) || document.getElementById("error").textContent,
    null, { timeout: 15000 },
  );
  const info = await page.evaluate(() => ({
    answer: window.liveface.answer, error: document.getElementById("error").textContent,
  }));
  if (info.answer) {
    const box = (info.answer.avatar && info.answer.avatar.mouth_box) || [0.35, 0.6, 0.65, 0.8];
    await page.evaluate((b) => window.__startMeasure(b), box);
  }
  started.push({ clicked, ...info });
}
await new Promise((r) => setTimeout(r, seconds * 1000));
const results = [];
for (let i = 0; i < tabs.length; i++) {
  const rec = await tabs[i].evaluate(() => window.__rec);
  const firstFrame = await tabs[i].evaluate(() => (window.__rec.frames[0] || [null])[0]);
  const origin = await tabs[i].evaluate(() => performance.timeOrigin);
  results.push({ ...started[i], rec, firstFrameAt: firstFrame === null ? null : origin + firstFrame });
}
await browser.close();
process.stdout.write(JSON.stringify({ t0, results }));
