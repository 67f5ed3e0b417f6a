//! The server's own description of itself, checked against what it does:
//! every HTTP response the tests receive is validated against the OpenAPI
//! document the server serves (`/api/openapi.json`) for its path, method
//! and status, and every WebSocket frame against the `ServerFrame` schema.
//! A response or a frame the document does not describe fails the test.

use std::collections::HashMap;
use std::sync::Mutex;

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

pub struct Contract {
    doc: Value,
    validators: Mutex<HashMap<String, std::sync::Arc<jsonschema::Validator>>>,
    /// (method, path template) seen, for the coverage check.
    pub seen: Mutex<std::collections::BTreeSet<(String, String)>>,
}

impl Contract {
    pub fn new(doc: Value) -> Result<Contract> {
        anyhow::ensure!(doc["openapi"].as_str().is_some_and(|v| v.starts_with("3.1")), "not OpenAPI 3.1");
        Ok(Contract { doc, validators: Mutex::default(), seen: Mutex::default() })
    }

    /// A validator for `schema`, resolving `#/components/…` in the document.
    fn validator(&self, key: &str, schema: &Value) -> Result<std::sync::Arc<jsonschema::Validator>> {
        if let Some(v) = self.validators.lock().unwrap().get(key) {
            return Ok(v.clone());
        }
        let mut root = schema.as_object().cloned().unwrap_or_default();
        root.insert("$schema".into(), json!("https://json-schema.org/draft/2020-12/schema"));
        root.insert("components".into(), self.doc["components"].clone());
        let v = std::sync::Arc::new(jsonschema::validator_for(&Value::Object(root)).map_err(|e| anyhow::anyhow!("{key}: {e}"))?);
        self.validators.lock().unwrap().insert(key.to_string(), v.clone());
        Ok(v)
    }

    /// The documented path that `path` (no query) is an instance of.
    pub fn template(&self, path: &str) -> Option<String> {
        let parts: Vec<&str> = path.split('/').collect();
        self.doc["paths"].as_object()?.keys().find(|t| {
            let tp: Vec<&str> = t.split('/').collect();
            tp.len() == parts.len() && tp.iter().zip(&parts).all(|(a, b)| (a.starts_with('{') && a.ends_with('}')) || a == b)
        }).cloned()
    }

    /// Checks one HTTP response. Paths outside `/api` (the UI, metrics) are
    /// not part of the API and pass.
    pub fn check_response(&self, method: &str, path: &str, status: u16, content_type: Option<&str>, body: &str) -> Result<()> {
        let path = path.split('?').next().unwrap_or(path);
        if !path.starts_with("/api/") || path == "/api/openapi.json" {
            return Ok(());
        }
        let Some(template) = self.template(path) else {
            if status == 404 {
                return Ok(()); // no such endpoint: the documented 404 body is checked below anyway
            }
            bail!("{method} {path} answered {status} but is not in the API description");
        };
        let m = method.to_ascii_lowercase();
        let op = &self.doc["paths"][&template][&m];
        if op.is_null() {
            if status == 405 {
                return Ok(());
            }
            bail!("{method} {template} is not in the API description (answered {status})");
        }
        self.seen.lock().unwrap().insert((m.clone(), template.clone()));
        let responses = &op["responses"];
        let (key, r) = match responses.get(status.to_string()) {
            Some(r) => (status.to_string(), r),
            None => ("default".to_string(), responses.get("default").with_context(|| format!("{method} {template}: {status} undocumented"))?),
        };
        let schema = &r["content"]["application/json"]["schema"];
        if m == "head" {
            return Ok(()); // no body, by HTTP
        }
        if schema.is_null() {
            anyhow::ensure!(body.trim().is_empty() || status == 101, "{method} {template} {status}: a body where none is documented: {body}");
            return Ok(());
        }
        anyhow::ensure!(
            content_type.is_some_and(|t| t.starts_with("application/json")),
            "{method} {template} {status}: content-type {content_type:?}, the description says JSON"
        );
        let value: Value = serde_json::from_str(body).with_context(|| format!("{method} {template} {status}: not JSON: {body}"))?;
        let v = self.validator(&format!("{m} {template} {key}"), schema)?;
        let errors: Vec<String> = v.iter_errors(&value).map(|e| format!("{} at {}", e, e.instance_path())).collect();
        anyhow::ensure!(errors.is_empty(), "{method} {template} {status} does not match its description: {errors:?}\n{value}");
        Ok(())
    }

    /// Checks one WebSocket frame from the server.
    pub fn check_frame(&self, frame: &Value) -> Result<()> {
        let v = self.validator("ServerFrame", &json!({"$ref": "#/components/schemas/ServerFrame"}))?;
        let errors: Vec<String> = v.iter_errors(frame).map(|e| format!("{} at {}", e, e.instance_path())).collect();
        anyhow::ensure!(errors.is_empty(), "frame does not match ServerFrame: {errors:?}\n{frame}");
        Ok(())
    }

    /// Every (method, path) of the document.
    pub fn operations(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        for (path, item) in self.doc["paths"].as_object().into_iter().flatten() {
            for m in item.as_object().into_iter().flatten().map(|(m, _)| m) {
                if ["get", "put", "post", "delete", "patch", "head", "options"].contains(&m.as_str()) {
                    out.push((m.clone(), path.clone()));
                }
            }
        }
        out.sort();
        out
    }
}
