// The last-resort service worker (scope /): README.md, "When the site does not answer".
//
// Network first, always. Only a navigation that gets no HTTP answer at all (fetch rejects:
// HAProxy dead or restarting, the network gone) is answered from the cache, with the
// maintenance page, whose recovery client then brings the tab back to the URL it asked for.
// Every HTTP answer, HAProxy's own 503 maintenance page included, passes through untouched.
// The dashboard and its assets are never served from the cache (no app shell), so a deploy
// can never hide behind a stale copy. Requests it does not handle never wait for it.
//
// Plain JavaScript on purpose: a worker cannot share the page's Wasm instance, and this is
// a few lines with no build step. HAProxy answers /sw.js from memory, `no-store`, so it is
// there even with every origin dead. To remove the worker: deploy sw-kill.js as sw.js.
"use strict";

const PREFIX = "last-resort-";
// The dashboard registers /sw.js?v=<static build>: a new build is a new script URL, so a
// new install that copies the page again, into a cache of its own.
const CACHE = PREFIX + (new URL(self.location.href).searchParams.get("v") || "0");
const PAGE = "/maintenance.html";
// The client the page loads: with the page, the only files ever answered from the cache.
const CLIENT = ["/pkg/client.js", "/pkg/client_bg.wasm"];
const FILES = [PAGE, ...CLIENT];

self.addEventListener("install", (event) => {
  // addAll rejects unless every answer is a 200: a failed install keeps the old worker.
  const fresh = FILES.map((url) => new Request(url, { cache: "no-store" }));
  event.waitUntil(
    caches.open(CACHE).then((cache) => cache.addAll(fresh)).then(() => self.skipWaiting()),
  );
});

self.addEventListener("activate", (event) => {
  const stale = (keys) => keys.filter((key) => key.startsWith(PREFIX) && key !== CACHE);
  event.waitUntil(
    caches
      .keys()
      .then((keys) => Promise.all(stale(keys).map((key) => caches.delete(key))))
      .then(() => self.clients.claim()),
  );
});

self.addEventListener("fetch", (event) => {
  const request = event.request;
  if (request.method !== "GET") return;
  const url = new URL(request.url);
  if (request.mode === "navigate") {
    event.respondWith(fetch(request).catch(() => offlinePage()));
  } else if (url.origin === self.location.origin && CLIENT.includes(url.pathname)) {
    // Not the page itself: the dashboard fetches it to learn whether the site answers.
    event.respondWith(fetch(request).catch(() => cached(url.pathname)));
  }
});

async function cached(path) {
  const answer = await caches.match(path, { cacheName: CACHE, ignoreVary: true });
  return answer || Response.error();
}

/** The saved maintenance page, marked `<body data-served-by="service-worker">`. */
async function offlinePage() {
  const answer = await cached(PAGE);
  if (!answer.ok) return answer;
  const html = await answer.text();
  // The first tag after the head: comments in the page mention the tag too.
  const at = html.indexOf("<body", html.indexOf("</head>"));
  const marked = at < 0 ? html : `${html.slice(0, at + 5)} data-served-by="service-worker"${html.slice(at + 5)}`;
  return new Response(marked, {
    status: 503,
    statusText: "Service Unavailable",
    headers: { "Content-Type": "text/html; charset=utf-8", "Cache-Control": "no-store" },
  });
}
