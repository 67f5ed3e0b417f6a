// Service worker: makes Parvis installable and shows notifications that
// open the right conversation. It caches nothing, so an update of the box
// is never hidden behind a stale copy.
self.addEventListener('install', () => self.skipWaiting());
self.addEventListener('activate', (ev) => ev.waitUntil(self.clients.claim()));
self.addEventListener('notificationclick', (ev) => {
  ev.notification.close();
  const room = ev.notification.data?.room;
  ev.waitUntil((async () => {
    const all = await self.clients.matchAll({ type: 'window', includeUncontrolled: true });
    const client = all[0];
    if (client) {
      await client.focus();
      client.postMessage({ room });
    } else {
      await self.clients.openWindow(room ? `/#room=${room}` : '/');
    }
  })());
});
