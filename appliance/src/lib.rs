//! Parvis: team chat, calls, STUN/TURN and certificates in one binary.
//! `main.rs` parses arguments and calls [`serve::run`] (through `cli`);
//! docs/architecture.md maps what lives where.

pub mod auth;
pub mod certs;
pub mod chat;
pub mod cli;
pub mod clock;
pub mod config;
pub mod doctor;
pub mod files;
pub mod rules;
pub mod serve;
pub mod server;
pub mod settings;
pub mod store;
pub mod system;
pub mod turn;
pub mod web;
