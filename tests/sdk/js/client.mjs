// Driven by tests/sdk/test_js_sdk.py: the official @runware/sdk-js against a wanflash server.
// argv[2] is a JSON job {url, key, image (path), tasks: [...], errors: bool}; "$IMAGE" in tasks
// becomes the uploaded imageUUID. Prints "RESULT <json>" and exits.
import { readFileSync } from "node:fs";
import { randomUUID } from "node:crypto";
import { Runware } from "@runware/sdk-js";

const job = JSON.parse(process.argv[2]);
const out = { uploads: {}, results: [], errors: {} };

const subst = (v, subs) =>
  typeof v === "string" ? (subs[v] ?? v)
  : Array.isArray(v) ? v.map((x) => subst(x, subs))
  : v && typeof v === "object" ? Object.fromEntries(Object.entries(v).map(([k, x]) => [k, subst(x, subs)]))
  : v;

const codeOf = async (promise) => {
  try { await promise; return "no error"; }
  catch (e) { return e?.error?.code ?? String(e); }
};

const rw = await Runware.initialize({ apiKey: job.key, url: job.url });
const subs = {};
if (job.image) {
  const data = "data:image/png;base64," + readFileSync(job.image).toString("base64");
  const up = await rw.imageUpload({ image: data });
  out.uploads.image = up;
  subs["$IMAGE"] = up.imageUUID;
}
for (const task of job.tasks) {
  out.results.push(await rw.videoInference(subst(task, subs)));
}
if (job.errors) {
  const base = { model: "alibaba:wan@2.6-flash", positivePrompt: "p", resolution: "720p", duration: 2 };
  out.errors.invalid = await codeOf(rw.videoInference({ ...base, duration: 99 }));
  const tu = randomUUID();
  await rw.videoInference({ ...base, taskUUID: tu, skipResponse: true });
  out.errors.duplicate = await codeOf(rw.videoInference({ ...base, taskUUID: tu, skipResponse: true }));
  out.errors.unknown = await codeOf(rw.getResponse({ taskUUID: randomUUID() }));
  out.errors.bad_key = await codeOf(Runware.initialize({ apiKey: "wrong-key", url: job.url, shouldReconnect: false }));
}
console.log("RESULT " + JSON.stringify(out));
process.exit(0);
