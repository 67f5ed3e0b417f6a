//! The live settings: the one owner of everything the first-boot wizard and
//! the admin's Settings page change while Parvis runs (the box's name, its
//! certificates, the TURN addresses, federation, the network). They are
//! checked by the configuration's own validator ([`Config::check`]), saved
//! into the configuration file (its comments and other keys kept), and
//! applied without a restart: the certificate manager, mDNS, the origins
//! the web page may reach, and the TURN engine follow.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock, RwLock};

use anyhow::Context as _;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::config::{Config, ConfigError, FilesConfig, Federation, GuestsConfig, NetworkConfig, TlsConfig};
use crate::store::{self, Db};
use crate::system::mdns::Announcer;

/// What the wizard and the Settings page edit.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    /// Default language of the interface: `fr` or `en`.
    pub language: String,
    pub company: String,
    /// Box name (`<name>.local`, certificate).
    pub name: String,
    pub tls: TlsConfig,
    /// Public address of the box for guests outside the LAN (TURN).
    #[schema(value_type = Option<String>)]
    pub turn_external_address: Option<IpAddr>,
    pub relay_port_min: u16,
    pub relay_port_max: u16,
    /// Upload speed of the internet connection, Mbit/s (0: not stated): the
    /// relay's total bandwidth cap follows from it.
    pub turn_uplink_mbps: u32,
    pub federation: Federation,
    /// The partner boxes allowed with `federation = allowlist` (domain names).
    #[serde(default)]
    pub federation_allow: Vec<String>,
    /// The box's address (DHCP or static), used from its next start.
    pub network: NetworkConfig,
    /// Guest links' longest life and how long former guests are kept.
    #[serde(default)]
    pub guests: GuestsConfig,
    /// Files: largest file, quotas, retention.
    #[serde(default)]
    pub files: FilesConfig,
}

impl Settings {
    pub fn from_config(c: &Config, company: String, language: String) -> Settings {
        Settings {
            language,
            company,
            name: c.name.clone(),
            tls: c.tls.clone(),
            turn_external_address: c.turn.external_address,
            relay_port_min: c.turn.relay_port_min,
            relay_port_max: c.turn.relay_port_max,
            turn_uplink_mbps: c.turn.uplink_mbps,
            federation: c.federation,
            federation_allow: c.federation_allow.clone(),
            network: c.network.clone(),
            guests: c.guests.clone(),
            files: c.files.clone(),
        }
    }

    /// `base` with these settings.
    pub fn config(&self, base: &Config) -> Config {
        let mut c = base.clone();
        c.name = self.name.clone();
        c.tls = self.tls.clone();
        c.turn.external_address = self.turn_external_address;
        c.turn.relay_port_min = self.relay_port_min;
        c.turn.relay_port_max = self.relay_port_max;
        c.turn.uplink_mbps = self.turn_uplink_mbps;
        c.federation = self.federation;
        c.federation_allow = self.allow_list();
        c.network = self.network.clone();
        c.guests = self.guests.clone();
        c.files = self.files.clone();
        c
    }

    /// The partner boxes as stored: trimmed, lower case.
    fn allow_list(&self) -> Vec<String> {
        self.federation_allow.iter().map(|d| d.trim().to_ascii_lowercase()).collect()
    }

    /// Every problem, keyed like the configuration (`company`, `language` too).
    pub fn check(&self, base: &Config) -> Vec<ConfigError> {
        let mut errors = Vec::new();
        if !matches!(self.language.as_str(), "fr" | "en") {
            errors.push(ConfigError { key: "language".into(), reason: "fr or en".into() });
        }
        let company = self.company.trim();
        if company.is_empty() || company.chars().count() > 100 {
            errors.push(ConfigError { key: "company".into(), reason: "1 to 100 characters".into() });
        }
        errors.extend(self.config(base).check());
        errors
    }
}

/// Writes the settings into the configuration file, keeping its other keys
/// and the admin's comments and layout (toml_edit).
pub fn persist(file: &Path, s: &Settings) -> anyhow::Result<()> {
    use toml_edit::{DocumentMut, Item, Table, value};
    let mut doc: DocumentMut = match std::fs::read_to_string(file) {
        Ok(text) => text.parse().with_context(|| format!("{} is not valid TOML", file.display()))?,
        Err(_) => DocumentMut::new(),
    };
    doc["name"] = value(s.name.clone());
    doc["federation"] = value(serde_plain(&s.federation)?);
    if s.federation_allow.is_empty() {
        doc.remove("federation_allow");
    } else {
        doc["federation_allow"] = value(s.allow_list().into_iter().collect::<toml_edit::Array>());
    }
    // a table of the settings, written key by key so that the file's own
    // comments and order survive
    let set_table = |doc: &mut DocumentMut, key: &str, v: toml::Value| -> anyhow::Result<()> {
        if !doc.contains_table(key) {
            doc[key] = Item::Table(Table::new());
        }
        let table = doc[key].as_table_mut().with_context(|| format!("{key} is not a table"))?;
        let toml::Value::Table(fields) = v else { anyhow::bail!("{key}: not a table") };
        let wanted: Vec<String> = fields.keys().cloned().collect();
        let stale: Vec<String> = table.iter().map(|(k, _)| k.to_string()).filter(|k| !wanted.contains(k)).collect();
        for k in stale {
            table.remove(&k);
        }
        for (k, v) in fields {
            let item = toml_edit::value(toml_value(v)?);
            match table.get_mut(&k) {
                Some(existing) if existing.is_value() => {
                    // keep the comment that decorates the old value
                    let decor = existing.as_value().map(|v| v.decor().clone());
                    *existing = item;
                    if let (Some(d), Some(v)) = (decor, existing.as_value_mut()) {
                        *v.decor_mut() = d;
                    }
                }
                _ => {
                    table.insert(&k, item);
                }
            }
        }
        Ok(())
    };
    set_table(&mut doc, "tls", toml::Value::try_from(&s.tls)?)?;
    set_table(&mut doc, "network", toml::Value::try_from(&s.network)?)?;
    set_table(&mut doc, "guests", toml::Value::try_from(&s.guests)?)?;
    set_table(&mut doc, "files", toml::Value::try_from(&s.files)?)?;
    if !doc.contains_table("turn") {
        doc["turn"] = Item::Table(Table::new());
    }
    let turn = doc["turn"].as_table_mut().context("turn is not a table")?;
    match s.turn_external_address {
        Some(ip) => turn["external_address"] = value(ip.to_string()),
        None => {
            turn.remove("external_address");
        }
    }
    turn["relay_port_min"] = value(i64::from(s.relay_port_min));
    turn["relay_port_max"] = value(i64::from(s.relay_port_max));
    turn["uplink_mbps"] = value(i64::from(s.turn_uplink_mbps));
    crate::certs::local::write_file(file, &doc.to_string(), true)?;
    Ok(())
}

/// A serde value written as TOML text, for an enum such as `federation`.
fn serde_plain<T: Serialize>(v: &T) -> anyhow::Result<String> {
    match serde_json::to_value(v)? {
        serde_json::Value::String(s) => Ok(s),
        other => anyhow::bail!("{other} is not a plain value"),
    }
}

fn toml_value(v: toml::Value) -> anyhow::Result<toml_edit::Value> {
    Ok(match v {
        toml::Value::String(s) => s.into(),
        toml::Value::Integer(i) => i.into(),
        toml::Value::Float(f) => f.into(),
        toml::Value::Boolean(b) => b.into(),
        toml::Value::Array(a) => {
            let mut out = toml_edit::Array::new();
            for x in a {
                out.push(toml_value(x)?);
            }
            out.into()
        }
        other => anyhow::bail!("{other} cannot be a setting"),
    })
}

/// `https://<name>[:port]` for each name or address.
/// IPv6 literals are left out: CSP source lists cannot name them.
pub fn origins(names: &[String], https_port: u16) -> Vec<String> {
    let port = if https_port == 443 { String::new() } else { format!(":{https_port}") };
    names.iter().filter(|n| !n.contains(':')).map(|n| format!("https://{n}{port}")).collect()
}

/// The service. Cheap to share (`Arc`).
pub struct SettingsService {
    base: Config,
    file: PathBuf,
    db: Db,
    live: RwLock<Settings>,
    origins: RwLock<Vec<String>>,
    tls: tokio::sync::watch::Sender<TlsConfig>,
    mdns: OnceLock<Announcer>,
    turn: OnceLock<netstack::driver::Handle>,
}

impl SettingsService {
    /// The settings of `base` (the configuration Parvis started with) and
    /// the company and language stored in the database.
    pub fn new(base: Config, company: String, language: String, db: Db) -> Arc<SettingsService> {
        let live = Settings::from_config(&base, company, language);
        let names = Self::names_for(&live.name);
        let origins = origins(&names, base.https.port());
        let (tls, _) = tokio::sync::watch::channel(base.tls.clone());
        Arc::new(SettingsService {
            file: base.file_to_save(),
            base,
            db,
            live: RwLock::new(live),
            origins: RwLock::new(origins),
            tls,
            mdns: OnceLock::new(),
            turn: OnceLock::new(),
        })
    }

    fn names_for(name: &str) -> Vec<String> {
        crate::certs::local::names_for(name, crate::system::net::hostname().as_deref(), &crate::system::net::local_addresses())
    }

    /// The announcer of `<name>.local`, once started.
    pub fn attach_mdns(&self, a: Announcer) {
        let _ = self.mdns.set(a);
    }

    /// The TURN engine, once started (it follows the TURN settings).
    pub fn attach_turn(&self, t: netstack::driver::Handle) {
        let _ = self.turn.set(t);
    }

    /// The configuration Parvis started with (file, variables, flags).
    pub fn base(&self) -> &Config {
        &self.base
    }

    /// The settings now.
    pub fn current(&self) -> Settings {
        self.live.read().expect("poisoned").clone()
    }

    /// The box's name now.
    pub fn name(&self) -> String {
        self.live.read().expect("poisoned").name.clone()
    }

    /// The configuration in force: the base with the live settings.
    pub fn effective(&self) -> Config {
        self.current().config(&self.base)
    }

    /// `https://<name>:<port>` for every name and address of the box.
    pub fn own_origins(&self) -> Vec<String> {
        self.origins.read().expect("poisoned").clone()
    }

    /// The certificate settings, for the certificate manager to follow.
    pub fn tls_watch(&self) -> tokio::sync::watch::Receiver<TlsConfig> {
        self.tls.subscribe()
    }

    /// The company given at setup (the claim writes it to the database).
    pub fn set_company(&self, company: String) {
        self.live.write().expect("poisoned").company = company;
    }

    /// Makes `new` the live settings: checked, saved, applied.
    pub async fn apply(&self, new: Settings) -> anyhow::Result<()> {
        let errors = new.check(&self.base);
        if let Some(e) = errors.first() {
            anyhow::bail!("{e}");
        }
        let old = self.current();
        persist(&self.file, &new)?;
        let (company, language) = (new.company.trim().to_string(), new.language.clone());
        self.db
            .write(move |ctx| {
                store::set_setting(ctx.conn, "company", &company)?;
                store::set_setting(ctx.conn, "language", &language)
            })
            .await?;
        *self.live.write().expect("poisoned") = new.clone();
        if old.name != new.name || old.tls != new.tls {
            // the certificate manager reissues the local certificate for the
            // new name and follows the new ACME settings
            self.tls.send_replace(new.tls.clone());
        }
        if old.name != new.name {
            if let Some(m) = self.mdns.get() {
                m.announce(&new.name);
            }
            *self.origins.write().expect("poisoned") = origins(&Self::names_for(&new.name), self.base.https.port());
        }
        let turn_part = |s: &Settings| (s.turn_external_address, s.relay_port_min, s.relay_port_max, s.turn_uplink_mbps);
        if turn_part(&old) != turn_part(&new)
            && let Some(t) = self.turn.get() {
                let (v4, v6) = match new.turn_external_address {
                    Some(ip @ IpAddr::V4(_)) => (Some(ip), None),
                    Some(ip @ IpAddr::V6(_)) => (None, Some(ip)),
                    None => (None, None),
                };
                t.reconfigure(netstack::driver::Reconfigure {
                    external_v4: v4,
                    external_v6: v6,
                    relay_ports: new.relay_port_min..=new.relay_port_max,
                    total_bandwidth_bytes_per_sec: new.config(&self.base).turn.total_kbps() * 1000 / 8,
                })
                .await?;
            }
        tracing::info!(name = %new.name, tls = ?new.tls.mode, "settings applied");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn persisting_keeps_the_files_other_keys_and_comments_and_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("parvis.toml");
        let original = "# our box\nhttps = \"0.0.0.0:443\" # the standard port\n\n[chat]\nsend_rate = 30 # busy team\n\n\
                        [turn]\n# keep it small\nuser_quota = 10\n";
        std::fs::write(&file, original).unwrap();
        let mut s = Settings::from_config(&Config::default(), "Acme".into(), "fr".into());
        s.name = "office".into();
        s.turn_external_address = Some("203.0.113.9".parse().unwrap());
        s.tls.mode = crate::config::TlsMode::Acme;
        s.tls.acme_domains = vec!["chat.example.com".into()];
        persist(&file, &s).unwrap();
        let text = std::fs::read_to_string(&file).unwrap();
        for comment in ["# our box", "# the standard port", "# busy team", "# keep it small"] {
            assert!(text.contains(comment), "{comment:?} lost:\n{text}");
        }
        let c = Config::from_toml(&text).unwrap();
        assert_eq!((c.name.as_str(), c.https.port(), c.chat.send_rate, c.turn.user_quota), ("office", 443, 30, 10));
        assert_eq!(Settings::from_config(&c, "Acme".into(), "fr".into()), s);
        assert!(s.check(&c).is_empty());
        // again, with a value changed: still one key, comments kept
        s.relay_port_max = 50100;
        persist(&file, &s).unwrap();
        let text = std::fs::read_to_string(&file).unwrap();
        assert_eq!(text.matches("relay_port_max").count(), 1, "{text}");
        assert!(text.contains("# keep it small"));
        assert_eq!(Config::from_toml(&text).unwrap().turn.relay_port_max, 50100);
    }

    #[test]
    fn settings_are_checked_like_the_configuration() {
        let base = Config::default();
        let mut s = Settings::from_config(&base, String::new(), "de".into());
        s.name = "Bad Name".into();
        s.relay_port_min = 60000;
        let keys: Vec<String> = s.check(&base).into_iter().map(|e| e.key).collect();
        assert_eq!(keys, ["language", "company", "name", "turn.relay_port_min"]);
    }
}
