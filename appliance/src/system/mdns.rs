//! `<name>.local` on the LAN by multicast DNS (RFC 6762, crate mdns-sd):
//! the box answers A/AAAA questions for its name with its current addresses,
//! and advertises its web UI as an `_https._tcp` service. Nothing is sent
//! beyond the link.

use std::sync::Mutex;

use mdns_sd::{ServiceDaemon, ServiceInfo};

const SERVICE: &str = "_https._tcp.local.";

pub struct Announcer {
    daemon: ServiceDaemon,
    https_port: u16,
    registered: Mutex<Option<String>>,
}

impl Announcer {
    /// Starts the responder (its own thread); None when no socket could be
    /// opened (logged: the box still works by address).
    pub fn start(name: &str, https_port: u16) -> Option<Announcer> {
        let daemon = ServiceDaemon::new().map_err(|e| tracing::warn!("mDNS off: {e}")).ok()?;
        let a = Announcer { daemon, https_port, registered: Mutex::new(None) };
        a.announce(name);
        Some(a)
    }

    /// Announces `<name>.local` (replacing the previous name).
    pub fn announce(&self, name: &str) {
        let mut reg = self.registered.lock().expect("poisoned");
        if let Some(old) = reg.take() {
            let _ = self.daemon.unregister(&old);
        }
        let host = format!("{name}.local.");
        let info = match ServiceInfo::new(SERVICE, &format!("Parvis {name}"), &host, "", self.https_port, &[("path", "/")][..]) {
            Ok(i) => i.enable_addr_auto(),
            Err(e) => return tracing::warn!("mDNS: {e}"),
        };
        let fullname = info.get_fullname().to_string();
        match self.daemon.register(info) {
            Ok(()) => {
                tracing::info!("mDNS: announcing {name}.local");
                *reg = Some(fullname);
            }
            Err(e) => tracing::warn!("mDNS: {e}"),
        }
    }
}

impl Drop for Announcer {
    fn drop(&mut self) {
        let _ = self.daemon.shutdown();
    }
}
