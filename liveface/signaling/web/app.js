// The avatar page: microphone up, avatar video and its audio down, over one RTCPeerConnection.
"use strict";

const $ = (id) => document.getElementById(id);
const ui = {
  video: $("avatar"), overlay: $("overlay"), start: $("start"), stop: $("stop"),
  voice: $("voice"), portrait: $("portrait"), state: $("state"), fps: $("fps"),
  latency: $("latency"), engine: $("engine"), repeated: $("repeated"), error: $("error"),
  join: $("join"),
};

// Shared with tests and embedding pages: the live connection and what the server reported.
const liveface = (window.liveface = { pc: null, mic: null, session: null, server: {}, answer: null });

function readFile(file) {
  return new Promise((resolve, reject) => {
    const r = new FileReader();
    r.onload = () => resolve(r.result);
    r.onerror = () => reject(r.error);
    r.readAsDataURL(file);
  });
}

function waitIceGathering(pc) {
  if (pc.iceGatheringState === "complete") return Promise.resolve();
  return new Promise((resolve) => {
    const check = () => {
      if (pc.iceGatheringState === "complete") {
        pc.removeEventListener("icegatheringstatechange", check);
        resolve();
      }
    };
    pc.addEventListener("icegatheringstatechange", check);
  });
}

// An access token, when the server asks for one, comes in the page's address: ...?token=XYZ
// (or #token=XYZ, which is never sent to a server or kept in logs).
function pageParams() {
  return new URLSearchParams(location.hash.slice(1) || location.search);
}

function authHeaders() {
  const token = pageParams().get("token");
  return token ? { Authorization: `Bearer ${token}` } : {};
}

// Scenes with several characters: ...#characters=2 opens one (faces found left to right), and the
// answer's join token makes a link for the next person: ...#join=TOKEN drives the next character.
function sceneFields() {
  const params = pageParams();
  if (params.get("join")) return { join: params.get("join") };
  const count = Number(params.get("characters") || 0);
  return count > 1 ? { characters: count } : {};
}

function showJoinLink(answer) {
  if (!answer.join_token) return;
  const params = pageParams();
  params.delete("characters");
  params.set("join", answer.join_token);
  ui.join.textContent = `You are character ${answer.character}. Others join at ${location.origin}${location.pathname}#${params}`;
}

async function iceServers() {
  const res = await fetch("ice", { headers: authHeaders() });
  if (!res.ok) {
    const body = await res.json().catch(() => ({}));
    throw new Error(body.error ? body.error.message : res.statusText);
  }
  return (await res.json()).iceServers;
}

function setState(text) {
  ui.state.textContent = text;
}

async function start() {
  ui.error.textContent = "";
  ui.start.disabled = true;
  try {
    const mic = await navigator.mediaDevices.getUserMedia({
      audio: { echoCancellation: true, noiseSuppression: true, autoGainControl: true },
    });
    const pc = new RTCPeerConnection({ iceServers: await iceServers() });
    liveface.pc = pc;
    liveface.mic = mic;
    pc.addTrack(mic.getAudioTracks()[0], mic);
    pc.addTransceiver("video", { direction: "recvonly" });
    const stats = pc.createDataChannel("stats");
    stats.onmessage = (e) => showServerStats(JSON.parse(e.data));
    const remote = new MediaStream();
    pc.ontrack = (e) => {
      remote.addTrack(e.track);
      ui.video.srcObject = remote;
    };
    pc.onconnectionstatechange = () => {
      setState(pc.connectionState);
      if (pc.connectionState === "failed") stop("connection failed");
    };
    await pc.setLocalDescription(await pc.createOffer());
    await waitIceGathering(pc);
    const body = { sdp: pc.localDescription.sdp, type: pc.localDescription.type, ...sceneFields() };
    const file = ui.portrait.files[0];
    if (file && !body.join) body.portrait = await readFile(file);
    const res = await fetch("offer", {
      method: "POST",
      headers: { "Content-Type": "application/json", ...authHeaders() },
      body: JSON.stringify(body),
    });
    const answer = await res.json();
    if (!res.ok) throw new Error(answer.error ? answer.error.message : res.statusText);
    liveface.answer = answer;
    liveface.session = answer.session;
    showJoinLink(answer);
    await pc.setRemoteDescription({ sdp: answer.sdp, type: answer.type });
    ui.overlay.textContent = "";
    ui.stop.disabled = false;
    pollStats();
  } catch (err) {
    stop(err.message || String(err));
  }
}

function stop(message) {
  if (liveface.pc) liveface.pc.close();
  if (liveface.mic) liveface.mic.getTracks().forEach((t) => t.stop());
  liveface.pc = null;
  liveface.mic = null;
  ui.video.srcObject = null;
  ui.start.disabled = false;
  ui.stop.disabled = true;
  ui.overlay.textContent = message ? "" : "Stopped.";
  ui.error.textContent = message || "";
  ui.join.textContent = "";
  setState("idle");
}

function showServerStats(s) {
  liveface.server = s;
  ui.engine.textContent = s.engine_ms_p50 == null ? "-" : `${s.engine_ms_p50.toFixed(1)} ms/chunk`;
  ui.repeated.textContent = String(s.frames_repeated);
}

async function pollStats() {
  const pc = liveface.pc;
  while (pc && liveface.pc === pc && pc.connectionState !== "closed") {
    const report = await pc.getStats();
    let rtt = null;
    report.forEach((r) => {
      if (r.type === "inbound-rtp" && r.kind === "video" && r.framesPerSecond != null) {
        ui.fps.textContent = r.framesPerSecond.toFixed(0);
        const jb = r.jitterBufferEmittedCount ? (1000 * r.jitterBufferDelay) / r.jitterBufferEmittedCount : 0;
        liveface.videoJitterMs = jb;
      }
      if (r.type === "candidate-pair" && r.nominated && r.currentRoundTripTime != null) {
        rtt = r.currentRoundTripTime * 1000;
      }
    });
    const server = liveface.server.server_delay_ms || 0;
    const total = server + (rtt || 0) / 2 + (liveface.videoJitterMs || 0);
    ui.latency.textContent = `~${total.toFixed(0)} ms (server ${server}, network ${((rtt || 0) / 2).toFixed(0)}, buffer ${(liveface.videoJitterMs || 0).toFixed(0)})`;
    await new Promise((r) => setTimeout(r, 1000));
  }
}

ui.start.onclick = () => start();
ui.stop.onclick = () => stop();
ui.voice.onchange = () => {
  ui.video.muted = !ui.voice.checked;
};
