//! The box's glue: updates and boot entries, installing from the live
//! system, growing the data partition, process limits and privileges, the
//! machine's network facts, mDNS, and durable file writes.

pub mod disk;
pub mod durable;
pub mod install;
pub mod mdns;
pub mod net;
pub mod sys;
pub mod update;
