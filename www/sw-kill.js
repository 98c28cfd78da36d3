// Kill switch for the last-resort service worker (README.md, "When the site does not answer").
//
// Deploy it in place of the worker and reload HAProxy, which serves /sw.js from memory:
//
//   cp www/sw-kill.js www/sw.js && cargo xtask restart haproxy
//
// Every page of the site asks for /sw.js when it loads (registration.update()), and browsers
// check it on navigations too. A browser that finds this script installs it at once; it
// deletes the worker's caches and unregisters itself, and from then on every request goes
// to the network as if no worker had ever been installed. Pages still register /sw.js, so
// while this file is deployed each visit installs and removes it again: harmless, and it
// reaches browsers that come back after months. Restore the worker with `git checkout www/sw.js`.
"use strict";

self.addEventListener("install", () => self.skipWaiting());

self.addEventListener("activate", (event) => {
  event.waitUntil(
    caches
      .keys()
      .then((keys) => Promise.all(keys.filter((key) => key.startsWith("last-resort-")).map((key) => caches.delete(key))))
      .then(() => self.registration.unregister()),
  );
});
